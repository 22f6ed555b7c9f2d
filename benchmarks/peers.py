"""Peer samplers (diffusers, k-diffusion) driven by the same exact model as scoregen's rows.

Optional: ``pip install -e ".[bench]"``. Nothing in ``scoregen/`` or the tests imports this.

* diffusers' schedulers take DDPM's betas (linear 1e-4 .. 0.02, 1000 steps) = our
  ``VPSDE.ddpm(1000)``; their model is called at integer timestep ``k`` (fractional for
  ``HeunDiscreteScheduler``), i.e. our time ``t = (k + 1) / 1000`` (our DDPM convention:
  ``alpha(i/N)^2 = alphas_cumprod[i-1]``). Each is driven by ``set_timesteps(n)`` and a
  ``scale_model_input`` / ``step`` loop with its own default settings; NFE = model calls.
* k-diffusion 0.1.1: ``import k_diffusion`` imports its training stack (skimage,
  torchvision, ...), so only ``k_diffusion/sampling.py`` is loaded, by file path, under a
  synthetic package whose ``utils`` is a stub with ``append_dims`` (all that file needs).
  Its samplers take a denoiser ``D(x~, sigma~) -> x0_hat`` in EDM's variables
  ``x~ = x / alpha``, ``sigma~ = sigma / alpha``; the wrapper maps ``sigma~`` to our time with
  ``t_of_log_snr(-log sigma~)``. Grid: its ``get_sigmas_karras`` (rho = 7) between the DDPM
  schedule's smallest and largest ``sigma~`` (its usual default), ending at 0.
"""

from __future__ import annotations

import importlib.util
import math
import sys
import types
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

import scoregen as sg

__all__ = ["available", "PEER_CASES", "run_peer", "missing_reason"]

Net = Callable[[Tensor, Tensor, "Tensor | None"], Tensor]

#: series -> (library, sampler, options)
PEER_CASES: dict[str, tuple[str, str, dict]] = {
    "diffusers/ddim": ("diffusers", "DDIMScheduler", {}),
    "diffusers/dpm++2m": ("diffusers", "DPMSolverMultistepScheduler",
                          {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "diffusers/dpm++2m-karras": ("diffusers", "DPMSolverMultistepScheduler",
                                 {"algorithm_type": "dpmsolver++", "solver_order": 2,
                                  "use_karras_sigmas": True}),
    "diffusers/dpm++3m": ("diffusers", "DPMSolverMultistepScheduler",
                          {"algorithm_type": "dpmsolver++", "solver_order": 3}),
    "diffusers/dpm++3m-karras": ("diffusers", "DPMSolverMultistepScheduler",
                                 {"algorithm_type": "dpmsolver++", "solver_order": 3,
                                  "use_karras_sigmas": True}),
    "diffusers/unipc": ("diffusers", "UniPCMultistepScheduler", {}),
    "diffusers/heun": ("diffusers", "HeunDiscreteScheduler", {}),
    "k-diffusion/lms": ("k_diffusion", "sample_lms", {}),
    "k-diffusion/dpmpp_2m": ("k_diffusion", "sample_dpmpp_2m", {}),
    "k-diffusion/dpmpp_3m_sde": ("k_diffusion", "sample_dpmpp_3m_sde", {}),
    "k-diffusion/heun": ("k_diffusion", "sample_heun", {}),
}
#: samplers taking two calls per step but one for the last: steps for a budget B
TWO_CALL = {"HeunDiscreteScheduler", "sample_heun"}

_CACHE: dict[str, object] = {}


def _load_k_sampling() -> object:
    if "k" in _CACHE:
        return _CACHE["k"]
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("k-diffusion is not installed")
    path = Path(list(spec.submodule_search_locations)[0]) / "sampling.py"
    pkg = types.ModuleType("k_diffusion")
    pkg.__path__ = [str(path.parent)]
    utils = types.ModuleType("k_diffusion.utils")

    def append_dims(x: Tensor, target_dims: int) -> Tensor:
        return x[(...,) + (None,) * (target_dims - x.ndim)]

    utils.append_dims = append_dims
    pkg.utils = utils
    saved = {k: sys.modules.get(k) for k in ("k_diffusion", "k_diffusion.utils")}
    sys.modules["k_diffusion"], sys.modules["k_diffusion.utils"] = pkg, utils
    try:
        mod_spec = importlib.util.spec_from_file_location("k_diffusion.sampling", path)
        module = importlib.util.module_from_spec(mod_spec)
        mod_spec.loader.exec_module(module)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    _CACHE["k"] = module
    return module


def missing_reason(library: str) -> str | None:
    """None if the library loads, else why not."""
    try:
        if library == "diffusers":
            import diffusers  # noqa: F401
        else:
            _load_k_sampling()
    except Exception as exc:  # noqa: BLE001 - any failure means: skip the rows
        return f"{type(exc).__name__}: {exc}"
    return None


def available() -> dict[str, str | None]:
    return {lib: missing_reason(lib) for lib in ("diffusers", "k_diffusion")}


def steps_for(sampler: str, budget: int) -> int:
    return (budget + 1) // 2 if sampler in TWO_CALL else budget


@torch.no_grad()
def run_peer(series: str, net: Net, sde: sg.SDE, x_T: Tensor, budget: int,
             generator: torch.Generator | None = None) -> Tensor:
    """Samples from ``x_T`` (our VP variable, (B, D)) with the peer row ``series``; a
    stochastic peer draws its noise from ``generator``."""
    library, sampler, options = PEER_CASES[series]
    n = steps_for(sampler, budget)
    if library == "diffusers":
        import diffusers

        cls = getattr(diffusers, sampler)
        sched = cls(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02,
                    beta_schedule="linear", **options)
        sched.set_timesteps(n)
        x = x_T * sched.init_noise_sigma
        for k in sched.timesteps:
            x_in = sched.scale_model_input(x, k)
            t = torch.full((x.shape[0],), (float(k) + 1.0) / 1000.0, dtype=x.dtype)
            eps = net(x_in, t, None)
            x = sched.step(eps, k, x).prev_sample
        return x
    k = _load_k_sampling()
    t_lo, t_hi = torch.tensor([sde.t_eps, sde.T], dtype=torch.float64)
    lv = (-sde.log_snr(torch.stack([t_lo, t_hi]))).exp()
    sigmas = k.get_sigmas_karras(n, float(lv[0]), float(lv[1]), rho=7.0)

    def denoiser(x_ve: Tensor, sigma_ve: Tensor) -> Tensor:
        s64 = sigma_ve.to(torch.float64)
        t = sde.t_of_log_snr(-s64.log())
        alpha, sigma = sde.alpha_sigma(t, check=False)
        a = alpha.to(x_ve.dtype)[:, None]
        s = sigma.to(x_ve.dtype)[:, None]
        x_vp = x_ve * a
        eps = net(x_vp, t.to(x_ve.dtype), None)
        return (x_vp - s * eps) / a

    x = x_T * math.sqrt(1.0 + float(sigmas[0]) ** 2)  # x~_T = x_T / alpha_T (VP)
    fn = getattr(k, sampler)
    if sampler == "sample_dpmpp_3m_sde":
        def noise_sampler(sigma: Tensor, sigma_next: Tensor) -> Tensor:
            return torch.randn(x.shape, generator=generator, dtype=x.dtype)

        return fn(denoiser, x, sigmas, disable=True, noise_sampler=noise_sampler)
    return fn(denoiser, x, sigmas, disable=True)
