"""The package layout: imports only run downwards, core -> train -> segmentation.

Layers, lowest first:

* core: every module of ``scoregen/`` outside the two packages below (``sde``, ``model``,
  ``losses``, ``samplers/``, ``likelihood``, ``analytic``, ``broadcast``, ``nn/``,
  ``metrics/``, ``plotting``, ``devices``);
* ``scoregen.train``: the trainer, checkpoints, EMA, distributed helpers;
* ``scoregen.segmentation``: the chest X-ray application.

A module may import its own layer and the layers below it, never one above. The facade
``scoregen/__init__.py`` re-exports from every layer, so a module below the top may not
import it either (``import scoregen`` / ``from scoregen import Trainer``).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "scoregen"
LAYERS = {"core": 0, "train": 1, "segmentation": 2}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> int | None:
    """Layer of a ``scoregen`` module; None for the facade ``scoregen`` itself and for
    modules outside the package."""
    parts = module.split(".")
    if parts[0] != "scoregen":
        return None
    if len(parts) == 1:
        return None
    return LAYERS.get(parts[1], LAYERS["core"])


def imported_modules(source: str, module: str, is_package: bool) -> list[tuple[int, str]]:
    """``(line, absolute module)`` of every import in ``source`` (also inside functions).

    ``from scoregen import x`` names the submodule ``scoregen.x`` when ``x`` is one, else
    the facade ``scoregen``; relative imports are resolved against ``module``.
    """
    out: list[tuple[int, str]] = []
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for a in node.names:
                sub = f"{base}.{a.name}"
                is_sub = (PACKAGE.parent / Path(*sub.split("."))).with_suffix(".py").is_file() \
                    or (PACKAGE.parent / Path(*sub.split("."))).is_dir()
                out.append((node.lineno, sub if is_sub else base))
    return out


def upward_imports(source: str, module: str, is_package: bool = False) -> list[str]:
    """Every import in ``source`` (of ``module``) that reaches a higher layer or the facade."""
    own = layer_of(module)
    bad = []
    for line, target in imported_modules(source, module, is_package):
        if not target.split(".")[0] == "scoregen":
            continue
        if target == "scoregen":
            bad.append(f"{module}:{line} imports the facade scoregen (it re-exports every layer)")
        elif layer_of(target) > own:
            bad.append(f"{module}:{line} imports {target} (a higher layer)")
    return bad


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p != PACKAGE / "__init__.py")


@pytest.mark.parametrize("path", MODULES, ids=[module_name(p) for p in MODULES])
def test_imports_only_run_downwards(path: Path) -> None:
    bad = upward_imports(path.read_text(), module_name(path), path.name == "__init__.py")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize(
    ("source", "module", "found"),
    [
        ("from scoregen.train import Trainer", "scoregen.losses", "scoregen.train"),
        ("from scoregen import segmentation", "scoregen.train.trainer", "scoregen.segmentation"),
        ("def f():\n    import scoregen.segmentation.metrics", "scoregen.plotting",
         "scoregen.segmentation.metrics"),
        ("from ..segmentation import fuse", "scoregen.train.trainer", "scoregen.segmentation"),
        ("import scoregen as sg", "scoregen.samplers.ddim", "facade"),
        ("from scoregen import Trainer", "scoregen.nn.unet", "facade"),
    ],
    ids=["core-to-train", "train-to-app", "lazy-import", "relative", "facade", "facade-name"],
)
def test_the_check_finds_upward_imports(source: str, module: str, found: str) -> None:
    """The checker itself: each of these is reported (so the test above can fail)."""
    bad = upward_imports(source, module)
    assert len(bad) == 1 and found in bad[0], bad


@pytest.mark.parametrize(
    ("source", "module"),
    [
        ("from scoregen.model import ScoreModel", "scoregen.train.trainer"),
        ("from scoregen.train import checkpoint", "scoregen.segmentation.inference"),
        ("from . import ema", "scoregen.train.checkpoint"),
        ("import torch", "scoregen.sde"),
    ],
    ids=["train-to-core", "app-to-train", "same-layer-relative", "third-party"],
)
def test_downward_imports_pass(source: str, module: str) -> None:
    assert upward_imports(source, module) == []


def test_importing_the_core_loads_neither_train_nor_the_application() -> None:
    """At run time too: the core's modules pull in no module of a higher layer."""
    code = (
        "import sys\n"
        "import scoregen.losses, scoregen.samplers, scoregen.likelihood, scoregen.analytic, "
        "scoregen.nn, scoregen.metrics, scoregen.plotting, scoregen.devices\n"
        "core = sorted(m for m in sys.modules if m.startswith(('scoregen.train', "
        "'scoregen.segmentation')))\n"
        "import scoregen.train\n"
        "train = sorted(m for m in sys.modules if m.startswith('scoregen.segmentation'))\n"
        "print(core, train)\n"
    )
    # importing a submodule runs scoregen/__init__.py first, which loads every layer; run
    # with the facade stubbed so only what the modules themselves import is loaded
    stub = (
        "import sys, types, pathlib\n"
        f"pkg = types.ModuleType('scoregen'); pkg.__path__ = [{str(PACKAGE)!r}]\n"
        "sys.modules['scoregen'] = pkg\n"
    )
    out = subprocess.run([sys.executable, "-c", stub + code], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout.strip()
    assert out == "[] []", out
