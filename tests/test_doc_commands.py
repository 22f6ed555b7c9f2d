"""Every command of a ```bash block in README.md, docs/*.md and benchmarks/README.md that
runs one of the repository's scripts parses with that script's own argument parser, so a
renamed or removed flag breaks this test instead of the reader's first try.

Parsing only (nothing is trained or sampled); placeholders such as ``DIR`` or ``CKPT`` are
plain paths to the parser. Running the commands is ``benchmarks/host_times.py``'s job
(the main job and ``toy_2d.py``) and the examples' own tests (tiny versions of them).
"""

from __future__ import annotations

import importlib.util
import re
import shlex
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "benchmarks" / "README.md",
         *sorted((ROOT / "docs").glob("*.md"))]
#: Scripts whose parser is a module-level ``parse_args(argv)``.
PARSERS = ("examples/covid_qu_seg.py", "examples/unconditional_xray.py",
           "benchmarks/segmentation.py", "benchmarks/throughput.py", "benchmarks/host_times.py",
           "benchmarks/samplers.py", "benchmarks/synthesis.py", "benchmarks/likelihood.py")
_FENCE = re.compile(r"^```(\S*)\s*$")


def bash_commands(path: Path) -> list[tuple[int, str, list[str]]]:
    """``(line, script, argv after the script)`` of every command in the page's ```bash blocks
    that runs one of :data:`PARSERS` (``\\`` continuations joined, comments dropped)."""
    found, lang, pending, start = [], None, "", 0
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        fence = _FENCE.match(line.strip())
        if fence and lang is None:
            lang = fence.group(1).lower()
            continue
        if line.strip() == "```" and lang is not None:
            lang = None
            continue
        if lang not in ("bash", "sh", "shell"):
            continue
        text = line.split(" #", 1)[0].rstrip() if not line.lstrip().startswith("#") else ""
        if not pending:
            start = number
        pending += " " + text.rstrip("\\")
        if text.endswith("\\"):
            continue
        tokens, pending = shlex.split(pending), ""
        for k, token in enumerate(tokens):
            if token in PARSERS:
                found.append((start, token, tokens[k + 1:]))
                break
    return found


def _script(relative: str):
    path = ROOT / relative
    name = f"doc_cmd_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def _cases() -> list:
    cases = []
    for page in PAGES:
        for line, script, argv in bash_commands(page):
            cases.append(pytest.param(script, argv, id=f"{page.relative_to(ROOT)}:{line}"))
    return cases


def test_the_command_finder_joins_continuations_and_drops_comments(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("```bash\npython examples/covid_qu_seg.py --task lung \\\n"
                    "    --cond add   # a comment\n# python examples/covid_qu_seg.py --x\n"
                    "```\n```text\npython examples/covid_qu_seg.py --bogus\n```\n")
    assert bash_commands(page) == [(2, "examples/covid_qu_seg.py",
                                    ["--task", "lung", "--cond", "add"])]


def test_the_main_pages_have_commands_to_check():
    assert len(_cases()) >= 10


@pytest.mark.parametrize(("script", "argv"), _cases())
def test_documented_commands_parse(script, argv):
    try:
        _script(script).parse_args(argv)
    except SystemExit as exit_:
        pytest.fail(f"`{script} {' '.join(argv)}` does not parse (exit {exit_.code})")
