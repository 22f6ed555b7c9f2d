"""Smoke tests of benchmarks/throughput.py: its quick path writes JSON, markdown and PNG.

The tiny preset at 16x16 with one or two iterations per row; compile variants only with
``torch.compile`` replaced by a failing stub (a real compile takes minutes on CPU), which
is also how a missing C++ compiler shows up.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "throughput.py"
QUICK = ["--quick", "--preset", "tiny", "--size", "16", "--batch", "2", "--threads", "1",
         "--warmup", "1", "--iters", "1", "--repeats", "2", "--sample-steps", "1"]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("throughput_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def read_outputs(out: Path) -> tuple[dict, str]:
    data = json.loads((out / "throughput.json").read_text())
    md = (out / "throughput.md").read_text()
    png = (out / "throughput.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000
    return data, md


def keys(rows: list[dict]) -> set[tuple[str, str, str]]:
    return {(r["task"], r["variant"], r["precision"]) for r in rows}


def test_quick_path_writes_every_row(bench, tmp_path: Path) -> None:
    out = tmp_path / "cpu"
    bench.main([*QUICK, "--variants", "eager", "channels_last", "--isolation", "none",
                "--device", "cpu", "--out", str(out)])
    data, md = read_outputs(out)
    rows = data["rows"]
    assert keys(rows) == {(t, v, p) for t in ("train", "sample")
                          for v in ("eager", "channels_last") for p in ("fp32", "bf16")}
    assert len(rows) == 8
    for r in rows:
        assert r["status"] == "ok", r["error"]
        assert r["img_per_s"] > 0 and r["img_per_s_std"] >= 0
        assert r["img_per_s_min"] <= r["img_per_s"] <= r["img_per_s_max"]
        assert len(r["block_s"]) == 2 and r["peak_mem_mb"] >= 0 and r["mem_method"]
        assert r["threads"] == 1
    eager = [r for r in rows if (r["variant"], r["precision"]) == ("eager", "fp32")]
    assert all(r["speedup"] == pytest.approx(1.0) for r in eager)
    meta = data["meta"]
    assert (meta["preset"], meta["size"], meta["batch"], meta["device"]) == ("tiny", 16, 2, "cpu")
    assert meta["params"] == sum(p.numel() for p in bench.sg.UNet(bench.unet_config("tiny"))
                                 .parameters())
    assert "## train" in md and "## sample" in md
    table_rows = [line for line in md.splitlines() if line.startswith("| eager |")
                  or line.startswith("| channels_last |")]
    assert len(table_rows) == 8 and all(line.endswith("| ok |") for line in table_rows)


def test_compile_failure_is_recorded_and_the_run_goes_on(bench, tmp_path, monkeypatch) -> None:
    def no_compiler(*args, **kwargs):
        raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found")

    monkeypatch.setattr(torch, "compile", no_compiler)
    out = tmp_path / "failing"
    bench.main([*QUICK, "--variants", "compile", "eager", "--precisions", "fp32",
                "--isolation", "none", "--device", "cpu", "--out", str(out)])
    data, md = read_outputs(out)
    rows = {(r["task"], r["variant"]): r for r in data["rows"]}
    assert set(rows) == {(t, v) for t in ("train", "sample") for v in ("compile", "eager")}
    for task in ("train", "sample"):
        failed, ok = rows[task, "compile"], rows[task, "eager"]
        assert failed["status"] == "failed" and "No working C++ compiler" in failed["error"]
        assert failed["speedup"] is None and "img_per_s" not in failed
        assert ok["status"] == "ok" and ok["img_per_s"] > 0
    assert md.count("failed: RuntimeError: InvalidCxxCompiler") == 2


def test_process_isolation_runs_a_row_in_a_worker(bench, tmp_path: Path) -> None:
    out = tmp_path / "isolated"
    bench.main([*QUICK, "--variants", "eager", "--precisions", "fp32", "--tasks", "sample",
                "--device", "cpu", "--out", str(out)])
    data, _ = read_outputs(out)
    (row,) = data["rows"]
    assert row["status"] == "ok", row["error"]
    assert data["meta"]["isolation"] == "process"
    assert "shared process" not in row["mem_method"]


def test_bad_arguments_are_refused(bench, tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="multiple of 4"):
        bench.main([*QUICK, "--size", "18", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="no variant left"):
        bench.main([*QUICK, "--variants", "compile", "--no-compile", "--out", str(tmp_path)])


def test_default_output_goes_under_runs_not_the_committed_results(bench, tmp_path,
                                                                  monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert bench.main([*QUICK, "--tasks", "sample", "--variants", "eager",
                       "--precisions", "fp32", "--isolation", "none", "--device", "cpu"])
    assert (tmp_path / "runs" / "throughput-cpu-quick" / "throughput.json").is_file()
