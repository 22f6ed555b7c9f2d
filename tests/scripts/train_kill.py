"""Train a tiny model in a subprocess that the tests SIGKILL at a chosen moment.

    python train_kill.py OUT_DIR --steps N [--pause-at K] [--stall-save-at K]

``--pause-at K``: after step K print ``PAUSED`` and sleep (to be killed mid-run).
``--stall-save-at K``: the checkpoint of step K writes half its bytes to the temporary
file, prints ``STALLED`` and sleeps (to be killed mid-write).
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
from train_helpers import make_points, make_trainer

import scoregen.train.checkpoint as ckpt


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out_dir")
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--checkpoint-every", type=int, default=3)
    p.add_argument("--pause-at", type=int, default=0)
    p.add_argument("--stall-save-at", type=int, default=0)
    p.add_argument("--dropout", type=float, default=0.1)
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

    trainer = make_trainer(args.out_dir, dropout=args.dropout,
                           checkpoint_every=args.checkpoint_every)

    def on_step_end(tr, step, loss):
        if step == args.pause_at:
            print("PAUSED", flush=True)
            time.sleep(600)

    trainer.fit(make_points(), steps=args.steps, on_step_end=on_step_end)
    print("DONE", flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
