#!/usr/bin/env python
"""Host times: torch threads against the machine's load, and the times the docs state.

Two studies, each measurement in its own process so thread settings cannot leak:

1. **Threads vs load.** One training step of the main job (``examples/covid_qu_seg.py``
   with its defaults: phantom, ``tiny`` U-Net, 64x64, batch 32, fp32 on CPU, through
   :meth:`scoregen.Trainer.step`) timed with 1 and with 2 torch intra-op threads, first as
   the machine is, then with ``--load-procs`` CPU-bound busy-loop processes that this
   script starts itself (each bounded by ``--load-seconds`` and killed when the
   measurement ends). OpenMP threads spin-wait for each other: on a core another process
   holds, the second thread can cost far more than it gains.
2. **Stated times.** The wall and CPU time of the commands whose times the README and
   docstrings state: the main job (``--threads auto``), ``examples/toy_2d.py`` and,
   with ``--samplers``, ``benchmarks/samplers.py --quick``. ``--quick`` shortens them and
   says how in each row's ``command``.

Every row records ``os.getloadavg()`` and the core count before and after it, so a
number taken on a shared machine says so. Writes ``host_times.json`` and
``host_times.md`` to ``--out`` (default ``runs/host_times``)::

    python benchmarks/host_times.py --quick            # ~5 min on 2 cores
    python benchmarks/host_times.py                    # ~15 min: full main job, full toy
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
FILES = ("host_times.json", "host_times.md")
_BUSY = "import time\nend = time.time() + {s}\nx = 0\nwhile time.time() < end:\n    x += 1\n"


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text}")
    return value


def host_state() -> dict[str, Any]:
    """The 1/5/15-minute load averages and the core count, now."""
    return {"loadavg": [round(x, 2) for x in os.getloadavg()], "nproc": os.cpu_count()}


class Load:
    """``n`` CPU-bound busy loops for at most ``seconds`` each (a second job on the host)."""

    def __init__(self, n: int, seconds: float) -> None:
        self.n, self.seconds = n, seconds
        self.procs: list[subprocess.Popen] = []

    def __enter__(self) -> Load:
        code = _BUSY.format(s=self.seconds)
        self.procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(self.n)]
        time.sleep(1.0)  # let them reach their cores
        return self

    def __exit__(self, *exc: object) -> None:
        for p in self.procs:
            p.kill()
        for p in self.procs:
            p.wait()


def timed_command(cmd: list[str], *, env: dict[str, str], label: str) -> dict[str, Any]:
    """Run ``cmd`` to completion; wall seconds and its CPU seconds (user + system)."""
    before, usage0 = host_state(), resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    usage1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (usage1.ru_utime - usage0.ru_utime) + (usage1.ru_stime - usage0.ru_stime)
    row = {"label": label, "command": " ".join(Path(c).name if c == sys.executable else c
                                               for c in cmd),
           "returncode": proc.returncode, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
           "before": before, "after": host_state()}
    threads = re.search(r"^(\d+) torch threads? ", proc.stdout, re.M)
    if threads:  # what the example's --threads auto chose
        row["threads"] = int(threads.group(1))
    if proc.returncode != 0:
        row["error"] = (proc.stderr or proc.stdout).strip().splitlines()[-1:]
    return row


# ----------------------------------------------------------------------------- worker
def step_worker(threads: int, steps: int) -> dict[str, Any]:
    """Seconds per training step of the main job's model with ``threads`` torch threads."""
    import importlib.util

    import torch

    torch.set_num_threads(threads)
    spec = importlib.util.spec_from_file_location("covid_qu_seg",
                                                  ROOT / "examples" / "covid_qu_seg.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    import scoregen as sg
    from scoregen.segmentation import PhantomDataset

    args = example.parse_args(["--threads", str(threads)])
    model, unet_config = example.build_model(args)
    data = PhantomDataset(args.batch_size, task=args.task, size=args.size, seed=args.seed)
    x0, cond = data.masks, data.images
    with tempfile.TemporaryDirectory() as tmp, sg.Trainer(
            model, sg.TrainConfig(lr=args.lr, batch_size=args.batch_size, max_steps=steps + 1),
            tmp, host=sg.HostOptions(progress=False, checkpoint_every=0),
            model_config=unet_config.to_dict()) as trainer:
        trainer.step(x0, cond)  # warm-up (allocations, first-call overheads)
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(steps):
            trainer.step(x0, cond)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"threads": torch.get_num_threads(), "steps": steps,
            "seconds_per_step": round(wall / steps, 4), "cpu_per_step": round(cpu / steps, 4)}


def step_row(threads: int, steps: int, load: int, load_seconds: float,
             env: dict[str, str]) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--worker-step", str(threads), "--steps", str(steps)]
    before = host_state()
    if load:
        with Load(load, load_seconds):
            loaded = host_state()
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    else:
        loaded = before
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    row: dict[str, Any] = {"threads": threads, "extra_load_procs": load, "before": before,
                           "at_start": loaded, "after": host_state()}
    if proc.returncode == 0:
        row.update(json.loads(proc.stdout.strip().splitlines()[-1]))
    else:
        row["error"] = (proc.stderr or proc.stdout).strip().splitlines()[-1:]
    return row


# ----------------------------------------------------------------------------- reports
def markdown(result: dict[str, Any]) -> str:
    meta = result["meta"]
    lines = [f"# Host times ({'quick' if meta['quick'] else 'full'})", "",
             f"{meta['hardware']}; {meta['nproc']} cores; started {meta['started']}. "
             "Load = 1-minute load average (before -> after the row); it includes other "
             "users' jobs, so a row with load above 0.5 was not taken on idle cores.", "",
             "## One training step of the main job, 1 vs 2 torch threads", "",
             "| extra busy processes | threads | s / step | CPU s / step | load |",
             "| ---: | ---: | ---: | ---: | --- |"]
    for r in result["steps"]:
        s = r.get("seconds_per_step", "error")
        c = r.get("cpu_per_step", "")
        lines.append(f"| {r['extra_load_procs']} | {r['threads']} | {s} | {c} | "
                     f"{r['before']['loadavg'][0]} -> {r['after']['loadavg'][0]} |")
    lines += ["", "## Commands whose times the docs state", "",
              "| what | command | threads | wall s | CPU s | load | exit |",
              "| --- | --- | ---: | ---: | ---: | --- | ---: |"]
    for r in result["commands"]:
        lines.append(f"| {r['label']} | `{r['command']}` | {r.get('threads', '')} | "
                     f"{r['wall_s']} | {r['cpu_s']} | "
                     f"{r['before']['loadavg'][0]} -> {r['after']['loadavg'][0]} | "
                     f"{r['returncode']} |")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="3 timed steps, a 1-epoch main job, toy_2d --quick")
    p.add_argument("--steps", type=positive_int, default=None,
                   help="timed training steps per row (default 6, 3 with --quick)")
    p.add_argument("--threads", type=positive_int, nargs="+", default=[1, 2])
    p.add_argument("--load-procs", type=positive_int, default=1,
                   help="busy-loop processes of the loaded rows")
    p.add_argument("--load-seconds", type=float, default=600.0,
                   help="upper bound on each busy loop's life")
    p.add_argument("--no-commands", action="store_true", help="only the thread study")
    p.add_argument("--samplers", action="store_true",
                   help="also time benchmarks/samplers.py --quick (minutes)")
    p.add_argument("--out", type=Path, default=Path("runs/host_times"))
    p.add_argument("--worker-step", type=positive_int, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    steps = args.steps or (3 if args.quick else 6)
    if args.worker_step is not None:
        print(json.dumps(step_worker(args.worker_step, steps)))
        return 0
    from scoregen.devices import device_name

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("OMP_NUM_THREADS", None)  # the rows set their own threads
    meta = {"quick": args.quick, "hardware": device_name("cpu"), "nproc": os.cpu_count(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "steps_per_row": steps,
            "load_procs": args.load_procs, "python": sys.version.split()[0]}
    result: dict[str, Any] = {"meta": meta, "steps": [], "commands": []}
    out = args.out
    out.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        (out / FILES[0]).write_text(json.dumps(result, indent=2))
        (out / FILES[1]).write_text(markdown(result))

    for load in (0, args.load_procs):
        for threads in args.threads:
            row = step_row(threads, steps, load, args.load_seconds, env)
            result["steps"].append(row)
            print(f"step: {load} extra busy, {threads} threads: "
                  f"{row.get('seconds_per_step', row.get('error'))} s/step "
                  f"(load {row['before']['loadavg'][0]} -> {row['after']['loadavg'][0]})",
                  flush=True)
            save()
    if not args.no_commands:
        with tempfile.TemporaryDirectory() as tmp:
            py = sys.executable
            main_job = [py, "examples/covid_qu_seg.py", "--no-progress", "--threads", "auto",
                        "--out", f"{tmp}/main"]
            if args.quick:
                main_job += ["--epochs", "1", "--phantom-val", "16", "--eval-samples", "16"]
            toy = [py, "examples/toy_2d.py", "--out", f"{tmp}/toy.png"]
            commands = [("main job" + (" (1 epoch, 16 val)" if args.quick else ""), main_job),
                        ("toy_2d" + (" --quick" if args.quick else ""),
                         toy + (["--quick"] if args.quick else []))]
            if args.samplers:
                commands.append(("samplers --quick", [py, "benchmarks/samplers.py", "--quick",
                                                      "--out", f"{tmp}/samplers"]))
            for label, cmd in commands:
                row = timed_command(cmd, env=env, label=label)
                row["command"] = row["command"].replace(tmp, "TMP")
                result["commands"].append(row)
                print(f"{label}: {row['wall_s']} s wall, {row['cpu_s']} s CPU, exit "
                      f"{row['returncode']} (load {row['before']['loadavg'][0]} -> "
                      f"{row['after']['loadavg'][0]})", flush=True)
                save()
    save()
    print(f"wrote {out / FILES[0]} and {out / FILES[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
