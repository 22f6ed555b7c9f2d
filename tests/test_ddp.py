"""DDP under torchrun on CPU (gloo, 2 processes) equals one process on the same global batch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from safetensors.torch import load_file

from scoregen.train.checkpoint import latest_checkpoint, load_checkpoint
from scoregen.train.metrics_log import MetricsLog

SCRIPTS = Path(__file__).parent / "scripts"
sys.path.insert(0, str(SCRIPTS))
from train_ddp import CONFIG  # noqa: E402
from train_helpers import make_pairs, make_trainer, weights  # noqa: E402

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="needs torch.distributed gloo"
)


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    """Run tests/scripts/train_ddp.py with `python -m torch.distributed.run` (torchrun)."""
    out = tmp_path_factory.mktemp("ddp")
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["PYTHONPATH"] = str(SCRIPTS) + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(SCRIPTS / "train_ddp.py"), str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def single_run(tmp_path_factory):
    """The same training in this process (WORLD_SIZE unset): phase 1 to step 6, then 9."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("single")
    tr = make_trainer(out, **CONFIG)
    assert not tr.distributed
    tr.fit(make_pairs(40), steps=6)
    phase1 = weights(tr)
    tr.fit(make_pairs(40), steps=9)
    torch.set_num_threads(n)
    return out, phase1, weights(tr), tr


@pytest.mark.parametrize("phase", ["phase1", "phase2"])
def test_ranks_hold_identical_weights_and_ema(ddp_run, phase):
    r0 = load_file(str(ddp_run / f"rank0_{phase}.safetensors"))
    r1 = load_file(str(ddp_run / f"rank1_{phase}.safetensors"))
    assert r0.keys() == r1.keys() and any(k.startswith("ema.") for k in r0)
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k


def test_two_processes_match_one_process_on_the_same_global_batch(ddp_run, single_run):
    _, phase1, phase2, _ = single_run
    for phase, ref in (("phase1", phase1), ("phase2", phase2)):
        got = load_file(str(ddp_run / f"rank0_{phase}.safetensors"))
        for k in ref:
            torch.testing.assert_close(got[k], ref[k], rtol=1e-5, atol=1e-6, msg=f"{phase} {k}")
        # and training really moved the weights away from the shared initialisation
    init = make_trainer(ddp_run / "init_probe", **CONFIG).model.state_dict()
    assert not torch.allclose(init["net.body.0.weight"], phase1["model.net.body.0.weight"])


def test_rank0_logs_the_global_loss_and_writes_checkpoints(ddp_run, single_run):
    out, _, _, tr = single_run
    ref = {r["step"]: r["loss"] for r in tr.read_metrics() if "event" not in r}
    logged = MetricsLog(ddp_run / "metrics.jsonl").read()
    got = {r["step"]: r["loss"] for r in logged if "event" not in r}
    assert sorted(got) == list(range(1, 10))  # one line per step, rank 0 only
    for step, loss in ref.items():
        assert got[step] == pytest.approx(loss, rel=1e-5), step
    ck = load_checkpoint(latest_checkpoint(ddp_run / "checkpoints"))
    assert ck.step == 9 and ck.state["world_size"] == 2
    assert ck.meta["rng_ranks"] == [0, 1] and ck.rng_state(1) is not None


def test_the_ranks_share_one_run_id_and_all_refuse_a_used_folder(ddp_run):
    """The run id is rank 0's on every rank, kept by the resume; a fresh run on the
    folder is refused on rank 0 and the refusal reaches rank 1 (no hang)."""
    ids = [(ddp_run / f"rank{r}_ids.txt").read_text().split() for r in (0, 1)]
    assert ids[0] == ids[1]
    first, resumed, refused = ids[0]
    assert first == resumed == load_checkpoint(latest_checkpoint(ddp_run / "checkpoints")).run_id
    assert refused == "ExistingRunError"


EXAMPLE_RUNS = {
    "unconditional_xray": ["--phantom-train", "32", "--size", "16", "--batch-size", "16",
                           "--steps", "2", "--sampling-steps", "2", "--samples", "4"],
    "covid_qu_seg": ["--phantom-train", "48", "--phantom-val", "8", "--size", "16",
                     "--batch-size", "16", "--epochs", "1", "--sampling-steps", "1",
                     "--epoch-eval-samples", "4", "--epoch-eval-steps", "1",
                     "--eval-samples", "4"],
}


@pytest.mark.parametrize("example", sorted(EXAMPLE_RUNS))
def test_the_examples_run_under_torchrun_and_only_rank_0_reports(tmp_path, example):
    """Both ranks train, leave the process group together (cleanup_distributed after
    fit) and exit 0; rank 0 alone evaluates and prints the summary."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    script = Path(__file__).parents[1] / "examples" / f"{example}.py"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(script), *EXAMPLE_RUNS[example], "--threads", "1", "--no-progress",
           "--out", str(tmp_path / "run")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("checkpoint: ") == 1, proc.stdout  # one summary, rank 0's
    assert (tmp_path / "run" / "results.json").is_file()
