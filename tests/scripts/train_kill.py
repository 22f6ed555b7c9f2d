"""Train a tiny model in a subprocess that the tests SIGKILL at a chosen moment.

    python train_kill.py OUT_DIR --steps N [--pause-at K] [--stall-save-at K]
                         [--on-existing refuse|resume|overwrite] [--stall-move]

``--pause-at K``: after step K print ``PAUSED`` and sleep (to be killed mid-run, holding
the out_dir lock).
``--stall-save-at K``: the checkpoint of step K writes half its bytes to the temporary
file, prints ``STALLED`` and sleeps (to be killed mid-write).
``--stall-move``: moving the old run aside (``--on-existing overwrite``) moves its first
entry (``checkpoints/``), prints ``MOVING`` and sleeps (to be killed between two moves).
A refused start (another trainer holds the folder, another run's checkpoints) prints
``REFUSED <error class>: <message>`` and exits 3.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
from train_helpers import make_points, make_trainer

import scoregen.train.checkpoint as ckpt
import scoregen.train.run_dir as run_dir
from scoregen.train import ExistingRunError, OutDirInUseError


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out_dir")
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--checkpoint-every", type=int, default=3)
    p.add_argument("--pause-at", type=int, default=0)
    p.add_argument("--stall-save-at", type=int, default=0)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--on-existing", default="refuse")
    p.add_argument("--stall-move", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(1)

    if args.stall_save_at:
        real_save_file = ckpt.save_file

        def stalling_save_file(tensors, filename, metadata=None):
            if f"step_{args.stall_save_at:08d}" not in str(filename):
                return real_save_file(tensors, filename, metadata=metadata)
            from safetensors.torch import save

            data = save(tensors, metadata=metadata)
            with open(filename, "wb") as f:
                f.write(data[: len(data) // 2])
                f.flush()
            print("STALLED", flush=True)
            time.sleep(600)

        ckpt.save_file = stalling_save_file

    if args.stall_move:
        real_replace = run_dir.os.replace
        moved = []

        def stalling_replace(src, dst):
            real_replace(src, dst)
            moved.append(src)
            if len(moved) == 1:
                print("MOVING", flush=True)
                time.sleep(600)

        run_dir.os.replace = stalling_replace

    trainer = make_trainer(args.out_dir, dropout=args.dropout,
                           checkpoint_every=args.checkpoint_every,
                           on_existing=args.on_existing)

    def on_step_end(tr, step, loss):
        if step == args.pause_at:
            print("PAUSED", flush=True)
            time.sleep(600)

    try:
        trainer.fit(make_points(), steps=args.steps, on_step_end=on_step_end)
    except (OutDirInUseError, ExistingRunError) as e:
        print(f"REFUSED {type(e).__name__}: {e}", flush=True)
        sys.exit(3)
    print("DONE", flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
