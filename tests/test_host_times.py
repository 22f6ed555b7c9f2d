"""benchmarks/host_times.py: the busy-loop load it starts ends with the measurement, every
row carries the load average and core count, and the report says so."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "host_times.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("host_times_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def test_the_second_job_runs_during_the_measurement_and_is_gone_after(bench):
    with bench.Load(2, seconds=30) as load:
        assert [p.poll() for p in load.procs] == [None, None]  # busy
    assert all(p.poll() is not None for p in load.procs)  # killed and reaped


def test_host_state_records_the_load_and_the_cores(bench):
    state = bench.host_state()
    assert len(state["loadavg"]) == 3 and state["nproc"] >= 1


def test_the_report_shows_the_load_of_every_row(bench):
    state = {"loadavg": [1.5, 1.0, 0.5], "nproc": 2}
    result = {"meta": {"quick": True, "hardware": "cpu", "nproc": 2, "started": "now"},
              "steps": [{"threads": 2, "extra_load_procs": 1, "seconds_per_step": 3.0,
                         "cpu_per_step": 4.0, "before": state, "after": state}],
              "commands": [{"label": "main job", "command": "python x.py", "threads": 1,
                            "wall_s": 10.0, "cpu_s": 9.0, "returncode": 0, "before": state,
                            "after": state}]}
    text = bench.markdown(result)
    assert "| 1 | 2 | 3.0 | 4.0 | 1.5 -> 1.5 |" in text
    assert "| main job | `python x.py` | 1 | 10.0 | 9.0 | 1.5 -> 1.5 | 0 |" in text
    assert "not taken on idle cores" in text


@pytest.mark.parametrize("argv", [["--threads", "0"], ["--steps", "-1"], ["--load-procs", "x"]],
                         ids=["threads", "steps", "load-procs"])
def test_bad_values_are_refused_at_parse_time(bench, argv):
    with pytest.raises(SystemExit):
        bench.parse_args(argv)


def test_default_output_is_under_runs(bench):
    assert bench.parse_args([]).out == Path("runs/host_times")


@pytest.mark.slow
def test_the_thread_study_runs_end_to_end(bench, tmp_path):
    assert bench.main(["--no-commands", "--threads", "1", "--steps", "1", "--out",
                       str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "host_times.json").read_text())["steps"]
    assert [r["extra_load_procs"] for r in rows] == [0, 1]
    assert all(r["seconds_per_step"] > 0 and "loadavg" in r["before"] for r in rows)
