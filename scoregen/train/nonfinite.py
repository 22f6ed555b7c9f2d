"""Non-finite safety: skipping and counting bad steps, and checking the weights.

The policy of :class:`~scoregen.train.trainer.Trainer` (issue 10, "non-finite safety"):

* a step whose loss (averaged over ranks) or gradient norm is not finite changes nothing
  (no optimizer or EMA update) and is counted by :class:`SkipCounter`;
  ``HostOptions.max_nonfinite`` skips in a row stop training with
  :class:`NonFiniteLossError` naming the steps. An fp16 ``GradScaler`` overflow with a
  finite loss is counted apart (``overflows``): lowering the scale is its normal work;
* every ``HostOptions.check_finite_every`` steps, after every skipped step and always
  before a save, the weights and the EMA are checked (:func:`nonfinite_parts`: one
  float64 sum per tensor, a single host sync; measured on one CPU thread: 0.1 ms on the
  tests' tiny MLP, ~6 % of its 1.7 ms step, and 6 ms on the ``"tiny"`` U-Net preset,
  ~10 % of its 62 ms step, hence every 50 steps by default: under 0.2 %); a non-finite
  value raises :class:`NonFiniteWeightsError` (:func:`diverged`) and nothing of that
  state is saved;
* checkpoints written after the first skipped step are "suspect" (``state["suspect"]``):
  pruning keeps the last good one while later ones are kept (a diverging run skips steps
  while its weights grow huge yet finite), and :meth:`SkipCounter.status` names it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from scoregen.train.run_dir import RunFolder

__all__ = ["NonFiniteLossError", "NonFiniteWeightsError", "SkipCounter", "check_finite",
           "nonfinite_parts", "nonfinite_tensors", "diverged"]


class NonFiniteLossError(RuntimeError):
    """Training produced too many non-finite losses or gradients in a row."""


class NonFiniteWeightsError(NonFiniteLossError):
    """The weights or the EMA stopped being finite: the run diverged (nothing saved)."""


def nonfinite_tensors(tensors: Mapping[str, Tensor]) -> list[str]:
    """Names of the floating-point tensors holding a NaN or an infinity."""
    return [k for k, v in tensors.items()
            if v.is_floating_point() and v.numel() and not bool(v.isfinite().all())]


def nonfinite_parts(model: nn.Module, ema_model: nn.Module) -> list[str]:
    """``[]`` when every weight of ``model`` and every float of ``ema_model``'s state is
    finite, else which of ``"EMA"`` / ``"weights"`` are not (sorted).

    One float64 sum per tensor (a NaN or inf anywhere makes it non-finite; float64 cannot
    overflow on float32 values; float32 on MPS, which lacks float64) and one host sync.
    """
    weights = [p.detach() for p in model.parameters()]
    ema = [v for v in ema_model.state_dict().values() if v.is_floating_point()]
    dtype = torch.float32 if weights[0].device.type == "mps" else torch.float64
    if bool(torch.stack([t.sum(dtype=dtype) for t in weights + ema]).isfinite().all()):
        return []
    return sorted({name for name, ts in (("weights", weights), ("EMA", ema))
                   for t in ts if not bool(t.isfinite().all())})


def diverged(step: int, parts: list[str], when: str, newest: str, skipped: int
             ) -> NonFiniteWeightsError:
    """The error of a run whose ``parts`` (:func:`nonfinite_parts`) stopped being finite
    after ``step``; ``newest``: the name of the run's newest checkpoint."""
    return NonFiniteWeightsError(
        f"the run diverged: after step {step} the {' and '.join(parts)} hold NaN or inf"
        f"{when}. Nothing of this state is saved; the newest checkpoint of the run is "
        f"{newest} ({skipped} steps skipped so far). Lower lr, set grad_clip, or use bf16 "
        "instead of fp16.")


def check_finite(model: nn.Module, ema_model: nn.Module, *, step: int, when: str,
                 folder: RunFolder, skipped: int) -> None:
    """Raise :func:`diverged` (naming the run's newest checkpoint in ``folder``) unless
    :func:`nonfinite_parts` finds every weight and EMA value finite."""
    parts = nonfinite_parts(model, ema_model)
    if parts:
        latest = folder.own_checkpoints()
        raise diverged(step, parts, when, latest[-1].name if latest else "none", skipped)


class SkipCounter:
    """The skipped steps of a run (carried over resumes in the checkpoint's state).

    ``skipped``: steps skipped as non-finite; ``overflows``: fp16 GradScaler overflows
    with a finite loss; ``in_a_row``: the current streak of skips; ``first``: the step of
    the first skip (None: none yet).
    """

    def __init__(self, max_in_a_row: int) -> None:
        self.max_in_a_row = max_in_a_row
        self.skipped = 0
        self.overflows = 0
        self.in_a_row = 0
        self.first: int | None = None

    def passed(self) -> None:
        """A step was applied: the streak ends."""
        self.in_a_row = 0

    def skip(self, step: int, loss: float, grad_norm: float) -> None:
        """Count the skipped ``step``; raise :class:`NonFiniteLossError` when it makes
        ``max_in_a_row`` in a row."""
        self.skipped += 1
        self.in_a_row += 1
        if self.first is None:
            self.first = step
        if self.in_a_row >= self.max_in_a_row:
            first = step - self.in_a_row + 1
            raise NonFiniteLossError(
                f"training stopped at step {step}: {self.in_a_row} consecutive steps "
                f"(steps {first}..{step}) had a non-finite loss or gradient norm (last loss "
                f"{loss}, grad norm {grad_norm}); max_nonfinite={self.max_in_a_row}. "
                "Skipped steps never reached the weights, the EMA or a checkpoint; try a lower "
                "lr, grad_clip, or bf16 instead of fp16."
            )

    def state(self) -> dict[str, Any]:
        """The counters for a checkpoint's ``state`` (and whether it is suspect)."""
        return {"skipped_steps": self.skipped, "overflow_steps": self.overflows,
                "nonfinite_run": self.in_a_row, "first_skipped_step": self.first,
                "suspect": self.first is not None}

    def load_state(self, st: Mapping[str, Any]) -> None:
        """Inverse of :meth:`state` (missing keys: zero / None, older checkpoints)."""
        self.skipped = int(st.get("skipped_steps", 0))
        self.overflows = int(st.get("overflow_steps", 0))
        self.in_a_row = int(st.get("nonfinite_run", 0))
        first = st.get("first_skipped_step")
        self.first = int(first) if first is not None else None

    def status(self, run_id: str, step: int, folder: RunFolder) -> str:
        """One line on the run's health; names the newest checkpoint of the run in
        ``folder`` written without skips."""
        if not self.skipped:
            return f"ok: run {run_id}, step {step}, no skipped steps"
        clean = [p for p in folder.own_checkpoints() if not folder.is_suspect(p)]
        return (f"NOT OK: run {run_id} skipped {self.skipped} step(s) with a non-finite loss "
                f"or gradient (first at step {self.first}); checkpoints written after skips "
                f"are suspect; the newest without: {clean[-1] if clean else 'none'}")
