"""Two-phase DDP run for tests/test_ddp.py, launched with torchrun on CPU (gloo).

    torchrun --standalone --nproc_per_node=2 train_ddp.py OUT_DIR

Phase 1 trains conditional TinyNet for 6 steps (global batch 8, checkpoint every 3) and
writes each rank's weights to OUT_DIR/rank{r}_phase1.safetensors. Phase 2 builds a fresh
model, resumes from the step-6 checkpoint and trains to step 9 (rank{r}_phase2...).
Phase 3 starts a fresh run on the same folder: rank 0 refuses it (another run's
checkpoints) and every rank must raise, none wait in a collective. Each rank writes its
run ids and the refusal to OUT_DIR/rank{r}_ids.txt.
"""

from __future__ import annotations

import faulthandler
import gc
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from train_helpers import make_pairs, make_trainer, weights

from scoregen.train import ExistingRunError
from scoregen.train.distributed import cleanup_distributed

CONFIG = dict(cond_dim=2, p_uncond=0.3, checkpoint_every=3, lr=1e-2, batch_size=8)


def run_phases(out: Path) -> None:
    data = make_pairs(40)
    tr = make_trainer(out, **CONFIG)
    assert tr.distributed and tr.world_size == 2, (tr.distributed, tr.world_size)
    tr.fit(data, steps=6)
    save_file(weights(tr), str(out / f"rank{tr.rank}_phase1.safetensors"))

    tr2 = make_trainer(out, **CONFIG)
    assert tr2.resume() and tr2.global_step == 6
    tr2.fit(data, steps=9)
    save_file(weights(tr2), str(out / f"rank{tr2.rank}_phase2.safetensors"))

    tr3 = make_trainer(out, **CONFIG)
    try:
        tr3.fit(data, steps=3)
        refused = "not refused"
    except ExistingRunError as e:
        refused = type(e).__name__
    (out / f"rank{tr.rank}_ids.txt").write_text(f"{tr.run_id} {tr2.run_id} {refused}")


def main() -> None:
    # a rank that aborts (SIGABRT in a C++ thread) prints every thread's Python stack, so
    # a CI failure says where it happened
    faulthandler.enable()
    torch.set_num_threads(1)
    # the trainers (and their DDP reducers, which hold Gloo work objects) live only in
    # run_phases: they are freed before the process group is torn down, not during
    # interpreter finalisation. No `finally`: after an error on one rank the barrier in
    # cleanup_distributed could wait for a rank that is gone; torchrun ends the others.
    run_phases(Path(sys.argv[1]))
    gc.collect()
    cleanup_distributed()


if __name__ == "__main__":
    main()
