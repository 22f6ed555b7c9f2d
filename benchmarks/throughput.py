"""Training and sampling throughput of the conditional U-Net: eager, channels_last, compile.

What is measured (each a *row* of the results, one per task x variant x precision):

* ``train``: images per second through :meth:`scoregen.Trainer.step` — the step users run
  (condition dropout draw, DSM loss under the trainer's autocast, backward, gradient
  clipping, AdamW, EMA update, the one host sync for the loss). Batches are already on
  the device; the data loader is not part of it.
* ``sample``: images per second through one DDIM step (one network forward, no grad),
  timed over ``scoregen.sample(model, x_T, "ddim", steps=S, cond=...)`` and divided by
  ``S``; a full S-step sample of one image takes ``S / img_per_s`` batch-seconds.

Variants: ``eager``; ``channels_last`` (weights and batches in channels_last);
``compile`` (``torch.compile`` of the net, default mode); ``compile_channels_last``.
Precisions: ``fp32`` and ``bf16`` (``torch.autocast``; weights stay float32).

The net is the X-ray experiment's: ``UNetConfig.from_preset(preset, cond_mode="add",
cond_channels=1)``, 1-channel images, DDPM's VP schedule, x0 prediction.

Timing: ``warmup`` iterations first (they include compilation; their wall time is
reported as ``warmup_s``), then ``repeats`` timed blocks of ``iters`` iterations each;
``img_per_s`` is the mean over the blocks, with their standard deviation, min and max.
CUDA is synchronised before each block starts and after it ends.

Peak memory (``peak_mem_mb`` and ``mem_method`` in every row):

* CUDA: ``torch.cuda.max_memory_allocated()`` over the timed blocks (reset after the
  warm-up), i.e. the steady-state peak of tensors, weights and optimizer state included.
* CPU: peak RSS over the timed blocks minus the RSS before the model was built. On Linux
  the kernel's peak-RSS counter (``VmHWM``) is reset after the warm-up through
  ``/proc/self/clear_refs``, so compilation and warm-up do not count; elsewhere
  ``resource.getrusage`` ``ru_maxrss`` (the whole life of the process). ``tracemalloc``
  is no use here (it does not see tensor memory, which torch allocates in C++), and
  psutil only reads the current RSS. With ``--isolation process`` (the default) each row
  runs in a fresh Python process so rows do not share allocator caches; with
  ``--isolation none`` rows share the process and the CPU numbers depend on the order.

A row that fails (e.g. ``torch.compile`` without a working C++ compiler, or out of
memory) is recorded with ``status: "failed"`` and its error string, and the run goes on;
with process isolation a worker that crashes or exceeds ``--timeout`` is recorded too.

Outputs in ``--out``: ``throughput.json`` (meta + rows), ``throughput.md`` (tables),
``throughput.png`` (bar chart with the spread as error bars).

Usage::

    python benchmarks/throughput.py                      # full: seed preset, 64x64, batch 32
    python benchmarks/throughput.py --quick --preset small --no-compile
    python benchmarks/throughput.py --device cuda --out benchmarks/results/throughput-cuda
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import gc
import json
import math
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

import scoregen as sg
from scoregen import devices

TASKS: tuple[str, ...] = ("train", "sample")
#: variant name -> (torch.compile, channels_last)
VARIANTS: dict[str, tuple[bool, bool]] = {
    "eager": (False, False),
    "channels_last": (False, True),
    "compile": (True, False),
    "compile_channels_last": (True, True),
}
DEFAULT_VARIANTS: tuple[str, ...] = ("eager", "channels_last", "compile")
PRECISIONS: tuple[str, ...] = ("fp32", "bf16")
#: The X-ray experiment's schedule and parametrisation (examples/covid_qu_seg.py).
SDE_ARGS = {"num_steps": 1000, "beta_start": 1e-4, "beta_end": 0.02}
PREDICTION = "x0"
#: iteration counts: mode -> (warmup, iters per block, repeats, DDIM steps per sample call)
ITERATIONS: dict[str, tuple[int, int, int, int]] = {
    "full": (2, 3, 3, 5),
    "quick": (1, 1, 2, 2),
}
ROW_MARK = "@@THROUGHPUT_ROW@@ "
FILES = ("throughput.json", "throughput.md", "throughput.png")
#: Default parent of ``--out``: ``runs/`` of the working folder (``benchmarks/results``
#: holds committed results: pass ``--out benchmarks/results/...`` on purpose).
RESULTS = Path("runs")


@dataclass(frozen=True)
class Setup:
    """What every row shares."""

    device: str
    preset: str = "seed"
    size: int = 64
    batch: int = 32
    warmup: int = 2
    iters: int = 3
    repeats: int = 3
    sample_steps: int = 5
    threads: int | None = None
    seed: int = 0


@dataclass(frozen=True)
class Case:
    """One row: a task, a variant and a precision."""

    task: str
    variant: str
    precision: str

    @property
    def name(self) -> str:
        return f"{self.task}/{self.variant}/{self.precision}"


# ----------------------------------------------------------------------------- memory
def _proc_status_kb(field: str) -> int | None:
    """``VmRSS`` / ``VmHWM`` of this process in KiB (Linux), else None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter to the current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return _proc_status_kb("VmHWM") is not None


def _ru_maxrss_kb() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak  # bytes on macOS


def _trim_heap() -> None:
    """Return freed heap pages to the OS (glibc ``malloc_trim``), so RSS baselines are fair."""
    gc.collect()
    name = ctypes.util.find_library("c")
    if name is None:
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(name).malloc_trim(0)


class PeakMemory:
    """Peak memory of the timed phase; see the module docstring for the exact meaning."""

    def __init__(self, device: torch.device, isolated: bool) -> None:
        self.device = device
        self.isolated = isolated
        self.method = ""
        self._base_kb = 0

    def start(self) -> None:
        """Call before the model is built."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
            return
        _trim_heap()
        self._base_kb = _proc_status_kb("VmRSS") or _ru_maxrss_kb()

    def steady(self) -> None:
        """Call after the warm-up, before the timed blocks."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.method = "torch.cuda.max_memory_allocated (timed blocks)"
        elif _reset_peak_rss():
            self.method = "peak RSS (VmHWM, reset after warm-up) - RSS before model build"
        else:
            self.method = "ru_maxrss (whole process, warm-up included) - RSS before model build"
        if self.device.type == "cpu" and not self.isolated:
            self.method += "; shared process"

    def peak_mb(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        hwm = _proc_status_kb("VmHWM") if "VmHWM" in self.method else None
        peak = hwm if hwm is not None else _ru_maxrss_kb()
        return max(peak - self._base_kb, 0) / 1024


# ----------------------------------------------------------------------------- model
def unet_config(preset: str) -> sg.UNetConfig:
    """The X-ray experiment's conditional net: SegDiff addition, 1-channel condition."""
    return sg.UNetConfig.from_preset(preset, in_channels=1, out_channels=1, cond_channels=1,
                                     cond_mode="add")


def count_parameters(preset: str) -> int:
    """Parameters of the net, counted on the meta device (no memory, no time)."""
    with torch.device("meta"):
        net = sg.UNet(unet_config(preset))
    return sum(p.numel() for p in net.parameters())


def _inputs(setup: Setup, device: torch.device, channels_last: bool) -> tuple[Any, Any]:
    gen = torch.Generator().manual_seed(setup.seed)
    shape = (setup.batch, 1, setup.size, setup.size)
    x = torch.randn(shape, generator=gen).clamp(-1, 1).to(device)
    cond = torch.randn(shape, generator=gen).to(device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
        cond = cond.contiguous(memory_format=torch.channels_last)
    return x, cond


def _autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


@contextlib.contextmanager
def _runner(case: Case, setup: Setup, device: torch.device) -> Iterator[Callable[[], None]]:
    """Build the model of ``case`` and yield a zero-argument function doing one iteration."""
    compile_net, channels_last = VARIANTS[case.variant]
    torch.manual_seed(setup.seed)
    net = sg.UNet(unet_config(setup.preset))
    sde = sg.VPSDE.ddpm(**SDE_ARGS)
    x, cond = _inputs(setup, device, channels_last)
    if case.task == "train":
        config = sg.TrainConfig(batch_size=setup.batch, precision=case.precision,
                                seed=setup.seed)
        host = sg.HostOptions(compile=compile_net, channels_last=channels_last,
                              checkpoint_every=0, log_every=2**31 - 1, progress=False)
        with tempfile.TemporaryDirectory(prefix="scoregen-throughput-") as out_dir, \
                sg.Trainer(sg.ScoreModel(net, sde, PREDICTION), config, out_dir,
                           host=host, device=device) as trainer:
            yield lambda: trainer.step(x, cond)
        return
    net = net.to(device).eval()
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    model = sg.ScoreModel(torch.compile(net) if compile_net else net, sde, PREDICTION)
    autocast = _autocast(case.precision, device)

    def sample_once() -> None:
        with autocast:
            sg.sample(model, x, "ddim", steps=setup.sample_steps, cond=cond)

    yield sample_once


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _check_supported(case: Case, device: torch.device) -> None:
    if case.precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise RuntimeError(f"bf16 is not supported on {torch.cuda.get_device_name(device)}")


def run_case(case: Case, setup: Setup, *, isolated: bool = False) -> dict[str, Any]:
    """Time one row in this process. Never raises: a failure becomes a ``failed`` row."""
    device = torch.device(setup.device)
    row: dict[str, Any] = {**asdict(case), "status": "ok", "error": None,
                           "compile": VARIANTS[case.variant][0],
                           "channels_last": VARIANTS[case.variant][1]}
    if setup.threads is not None:
        torch.set_num_threads(setup.threads)
    row["threads"] = torch.get_num_threads()
    memory = PeakMemory(device, isolated)
    images = setup.batch * (setup.sample_steps if case.task == "sample" else 1)
    try:
        _check_supported(case, device)
        if row["compile"]:
            # Rows sharing a process would share Dynamo's caches (and its recompile limit).
            torch._dynamo.reset()
        memory.start()
        with _runner(case, setup, device) as once:
            t0 = time.perf_counter()
            for _ in range(setup.warmup):
                once()
            _sync(device)
            row["warmup_s"] = time.perf_counter() - t0
            memory.steady()
            block_s = []
            for _ in range(setup.repeats):
                _sync(device)
                t0 = time.perf_counter()
                for _ in range(setup.iters):
                    once()
                _sync(device)
                block_s.append(time.perf_counter() - t0)
            row["peak_mem_mb"] = memory.peak_mb()
            row["mem_method"] = memory.method
    except Exception as err:  # every failure is a result to record
        row.update(status="failed", error=_error_text(err))
        return row
    finally:
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    rates = [images * setup.iters / s for s in block_s]
    row.update(
        img_per_s=statistics.fmean(rates),
        img_per_s_std=statistics.stdev(rates) if len(rates) > 1 else 0.0,
        img_per_s_min=min(rates),
        img_per_s_max=max(rates),
        s_per_iter=statistics.fmean(block_s) / setup.iters,
        block_s=block_s,
    )
    return row


def _error_text(err: BaseException, limit: int = 4000) -> str:
    text = f"{type(err).__name__}: {err}".strip()
    if len(text) > limit:
        text = text[: limit // 2] + "\n[...]\n" + text[-limit // 2 :]
    return text


# ----------------------------------------------------------------------------- isolation
def run_case_in_subprocess(case: Case, setup: Setup, timeout: float | None) -> dict[str, Any]:
    """Run one row in a fresh Python process (own allocator, own compile state)."""
    spec = json.dumps({"case": asdict(case), "setup": asdict(setup)})
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", spec]
    failed = {**asdict(case), "status": "failed", "compile": VARIANTS[case.variant][0],
              "channels_last": VARIANTS[case.variant][1]}
    # Own session: on a timeout the worker and its compile workers are killed together.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return {**failed, "error": f"worker timed out after {timeout:g} s (--timeout)"}
    for line in reversed(stdout.splitlines()):
        if line.startswith(ROW_MARK):
            return json.loads(line[len(ROW_MARK):])
    tail = "\n".join(stderr.strip().splitlines()[-15:])
    return {**failed, "error": f"worker exited with code {proc.returncode} and no result:\n{tail}"}


def _worker(spec: str) -> None:
    data = json.loads(spec)
    row = run_case(Case(**data["case"]), Setup(**data["setup"]), isolated=True)
    print(ROW_MARK + json.dumps(row), flush=True)


# ----------------------------------------------------------------------------- reports
def device_name(device: torch.device) -> str:
    return devices.device_name(device)


def add_speedups(rows: list[dict[str, Any]]) -> None:
    """``speedup``: img/s relative to the task's ``eager``/``fp32`` row (when it ran)."""
    base = {r["task"]: r["img_per_s"] for r in rows
            if r["variant"] == "eager" and r["precision"] == "fp32" and r["status"] == "ok"}
    for r in rows:
        ok = r["status"] == "ok" and r["task"] in base
        r["speedup"] = r["img_per_s"] / base[r["task"]] if ok else None


def _fmt(value: float | None, digits: int = 1) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def markdown(meta: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """The report as a markdown page: one table per task."""
    lines = [
        f"# Throughput: `{meta['preset']}` U-Net, {meta['size']}x{meta['size']}, "
        f"batch {meta['batch']}, {meta['device']}",
        "",
        f"- device: {meta['device']} ({meta['device_name']}), torch {meta['torch']}, "
        f"{meta['threads']} intra-op threads, {meta['mode']} mode",
        f"- net: {meta['params'] / 1e6:.2f} M parameters, cond_mode='add', 1 condition "
        f"channel, {meta['prediction']} prediction",
        f"- timing: {meta['warmup']} warm-up iteration(s) excluded, then {meta['repeats']} "
        f"block(s) of {meta['iters']} iteration(s); img/s = mean ± std over the blocks",
        f"- train = `Trainer.step` (forward, backward, clipping, AdamW, EMA); sample = one "
        f"DDIM step = one forward (timed over {meta['sample_steps']}-step `sg.sample` calls)",
        f"- peak memory: {meta['mem_method']}; isolation: {meta['isolation']}",
        "",
    ]
    for task in TASKS:
        task_rows = [r for r in rows if r["task"] == task]
        if not task_rows:
            continue
        lines += [
            f"## {task}",
            "",
            "| variant | precision | img/s | ± std | speed-up | s / iter | peak mem MB "
            "| warm-up s | status |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        ]
        for r in task_rows:
            status = "ok" if r["status"] == "ok" else "failed: " + _one_line(r.get("error"))
            speedup = f"{r['speedup']:.2f}x" if r.get("speedup") is not None else "—"
            lines.append(
                f"| {r['variant']} | {r['precision']} | {_fmt(r.get('img_per_s'))} "
                f"| {_fmt(r.get('img_per_s_std'))} | {speedup} | {_fmt(r.get('s_per_iter'), 3)} "
                f"| {_fmt(r.get('peak_mem_mb'), 0)} | {_fmt(r.get('warmup_s'))} | {status} |"
            )
        lines.append("")
    return "\n".join(lines)


def _one_line(text: str | None, limit: int = 120) -> str:
    line = (text or "").strip().splitlines()[0] if text and text.strip() else "unknown error"
    line = line.replace("|", "\\|")
    return line if len(line) <= limit else line[: limit - 1] + "…"


def bar_chart(meta: dict[str, Any], rows: list[dict[str, Any]], path: Path) -> None:
    """One panel per task: img/s per variant, one bar per precision, std as error bars."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    tasks = [t for t in TASKS if any(r["task"] == t for r in rows)]
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    precisions = list(dict.fromkeys(r["precision"] for r in rows))
    fig = Figure(figsize=(4.5 * max(len(tasks), 1), 3.8), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, max(len(tasks), 1), squeeze=False)[0]
    width = 0.8 / max(len(precisions), 1)
    for ax, task in zip(axes, tasks, strict=False):
        by_key = {(r["variant"], r["precision"]): r for r in rows if r["task"] == task}
        for j, prec in enumerate(precisions):
            xs = [i + (j - (len(precisions) - 1) / 2) * width for i in range(len(variants))]
            cells = [by_key.get((v, prec)) for v in variants]
            heights = [c["img_per_s"] if c and c["status"] == "ok" else 0.0 for c in cells]
            errs = [c["img_per_s_std"] if c and c["status"] == "ok" else 0.0 for c in cells]
            ax.bar(xs, heights, width, yerr=errs, capsize=3, label=prec)
            for x, c in zip(xs, cells, strict=True):
                if c is not None and c["status"] != "ok":
                    ax.text(x, 0, "failed", rotation=90, ha="center", va="bottom", fontsize=8)
        ax.set_xticks(range(len(variants)), [v.replace("_", "\n") for v in variants],
                      fontsize=8)
        unit = "img/s (one DDIM step)" if task == "sample" else "img/s (Trainer.step)"
        ax.set_ylabel(unit)
        ax.set_title(task)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{meta['preset']} U-Net {meta['size']}x{meta['size']}, batch {meta['batch']}, "
                 f"{meta['device']} ({meta['device_name']})", fontsize=9)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fig.savefig(tmp, format="png")
    os.replace(tmp, path)


def write_reports(out: Path, meta: dict[str, Any], rows: list[dict[str, Any]]) -> list[Path]:
    """Write ``throughput.json``, ``.md`` and ``.png`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path, png_path = (out / name for name in FILES)
    json_path.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    md_path.write_text(markdown(meta, rows))
    bar_chart(meta, rows, png_path)
    return [json_path, md_path, png_path]


# ----------------------------------------------------------------------------- CLI
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="fewer iterations: warm-up {0}, {2} timed blocks of {1}, {3} DDIM "
                        "steps per sample call".format(*ITERATIONS["quick"]))
    p.add_argument("--device", default="auto",
                   help="'auto' (CUDA when available, else CPU), 'cpu', 'cuda' or 'cuda:N'")
    p.add_argument("--preset", default="seed", choices=list(sg.UNET_PRESETS))
    p.add_argument("--size", type=int, default=64, help="image height and width")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    p.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS),
                   choices=list(VARIANTS))
    p.add_argument("--no-compile", action="store_true", help="drop the compile variants")
    p.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=PRECISIONS)
    p.add_argument("--warmup", type=int, help="warm-up iterations (not timed)")
    p.add_argument("--iters", type=int, help="iterations per timed block")
    p.add_argument("--repeats", type=int, help="timed blocks (the spread is over these)")
    p.add_argument("--sample-steps", type=int, help="DDIM steps per timed sg.sample call")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    p.add_argument("--isolation", choices=("process", "none"), default="process",
                   help="'process': each row in a fresh Python process (default; fair "
                        "CPU memory, survives crashes); 'none': all rows in this process")
    p.add_argument("--timeout", type=float, default=3600.0,
                   help="seconds per row with --isolation process (compile included)")
    p.add_argument("--out", type=Path, help="output folder (default runs/"
                                            "throughput-<device>[-quick])")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for name in ("size", "batch", "iters", "repeats", "sample_steps", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if args.warmup is not None and args.warmup < 0:
        p.error(f"--warmup must be >= 0, got {args.warmup}")
    return args


def resolve_device(name: str) -> torch.device:
    try:
        return devices.resolve_device(name)
    except ValueError as err:
        raise SystemExit(f"--device: {err}") from err


def run_cases(
    cases: Sequence[Case], setup: Setup, *, isolation: str, timeout: float | None
) -> list[dict[str, Any]]:
    """Run every row (in-process or one worker process each), printing a line per row."""
    gc.freeze()  # imported modules live on: keeps each row's gc.collect() cheap
    rows = []
    try:
        for case in cases:
            print(f"[throughput] {case.name} ...", end=" ", flush=True)
            if isolation == "process":
                row = run_case_in_subprocess(case, setup, timeout)
            else:
                row = run_case(case, setup)
            rows.append(row)
            if row["status"] == "ok":
                print(f"{row['img_per_s']:.2f} ± {row['img_per_s_std']:.2f} img/s, "
                      f"peak {row['peak_mem_mb']:.0f} MB", flush=True)
            else:
                print("FAILED: " + _one_line(row["error"]), flush=True)
    finally:
        gc.unfreeze()
    return rows


def main(argv: Sequence[str] | None = None) -> list[Path]:
    args = parse_args(argv)
    if args.worker is not None:
        _worker(args.worker)
        return []
    device = resolve_device(args.device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    mode = "quick" if args.quick else "full"
    warmup, iters, repeats, sample_steps = ITERATIONS[mode]
    variants = [v for v in args.variants if not (args.no_compile and VARIANTS[v][0])]
    if not variants:
        raise SystemExit("no variant left to run (all were compile variants and --no-compile)")
    setup = Setup(
        device=str(device), preset=args.preset, size=args.size, batch=args.batch,
        warmup=warmup if args.warmup is None else args.warmup,
        iters=args.iters or iters, repeats=args.repeats or repeats,
        sample_steps=args.sample_steps or sample_steps, threads=args.threads,
    )
    factor = unet_config(args.preset).downsample_factor
    if args.size % factor:
        raise SystemExit(f"--size must be a multiple of {factor} for preset {args.preset!r}")
    if any(VARIANTS[v][0] for v in variants) and setup.warmup < 1:
        raise SystemExit("compile variants need --warmup >= 1 (compilation happens there)")
    out = args.out or RESULTS / f"throughput-{device.type}{'-quick' if args.quick else ''}"

    cases = [Case(t, v, p) for t in args.tasks for v in variants for p in args.precisions]
    rows = run_cases(cases, setup, isolation=args.isolation, timeout=args.timeout)
    add_speedups(rows)
    methods = sorted({r["mem_method"] for r in rows if r.get("mem_method")})
    meta = {
        **asdict(setup), "mode": mode, "device_name": device_name(device),
        "torch": torch.__version__, "python": platform.python_version(),
        "threads": next((r["threads"] for r in rows if "threads" in r), None),
        "params": count_parameters(args.preset), "cond_mode": "add", "cond_channels": 1,
        "prediction": PREDICTION, "sde": SDE_ARGS, "isolation": args.isolation,
        "mem_method": "; ".join(methods) or "—",
        "command": "python benchmarks/throughput.py " + " ".join(sys.argv[1:] if argv is None
                                                                 else argv),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }
    if device.type == "cuda":  # fp32 rows use TF32 convolutions when cuDNN allows them
        meta["cuda_tf32"] = {"matmul": torch.backends.cuda.matmul.allow_tf32,
                             "cudnn": torch.backends.cudnn.allow_tf32}
        meta["cudnn_benchmark"] = torch.backends.cudnn.benchmark
    paths = write_reports(out, meta, rows)
    print(f"[throughput] wrote {', '.join(str(p) for p in paths)}")
    return paths


if __name__ == "__main__":
    main()
