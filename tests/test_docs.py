"""Every ```python block in docs/*.md and README.md runs.

Blocks of one file share a namespace and run in order (a page reads top to bottom), in a
fresh temporary working directory, under a time budget per file. ```bash, ```text and
other blocks are not executed. A failure names the file, the block and its first line.
"""

from __future__ import annotations

import re
import signal
import time
import traceback
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = sorted((ROOT / "docs").glob("*.md")) + [p for p in [ROOT / "README.md"] if p.exists()]
#: Seconds one page may take in total (all its blocks).
BUDGET_S = 45.0
#: Pages that must carry runnable examples.
MUST_HAVE_CODE = ("concepts.md", "samplers.md", "likelihood.md")

_FENCE = re.compile(r"^```(\S*)\s*$")


def python_blocks(path: Path) -> list[tuple[int, str]]:
    """``(first line number, source)`` of every ```python block, in order."""
    blocks, current, start, lang = [], None, 0, ""
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        fence = _FENCE.match(line.strip())
        if fence and current is None:
            lang, current, start = fence.group(1).lower(), [], number + 1
        elif line.strip() == "```" and current is not None:
            if lang in ("python", "py"):
                blocks.append((start, "\n".join(current) + "\n"))
            current = None
        elif current is not None:
            current.append(line)
    if current is not None:
        raise ValueError(f"{path.name}: unclosed ``` block opened at line {start - 1}")
    return blocks


def test_fence_parser_finds_only_python_blocks(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("text\n```python\nx = 1\n```\n```bash\nrm -rf /\n```\n"
                    "```text\nout\n```\n```python\ny = x + 1\n```\n")
    assert python_blocks(page) == [(3, "x = 1\n"), (12, "y = x + 1\n")]


@pytest.mark.parametrize("name", MUST_HAVE_CODE)
def test_the_concept_pages_have_runnable_examples(name):
    assert python_blocks(ROOT / "docs" / name), f"docs/{name} has no ```python block"


class _Timeout(Exception):
    pass


def _alarm(signum, frame):  # noqa: ARG001 - signal handler signature
    raise _Timeout


@pytest.mark.parametrize("path", [p for p in DOC_FILES if python_blocks(p)],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_python_blocks_run(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__docs__"}
    use_alarm = hasattr(signal, "SIGALRM")
    if use_alarm:
        previous = signal.signal(signal.SIGALRM, _alarm)
        signal.alarm(int(BUDGET_S * 2))  # hard stop for a runaway block
    t0 = time.perf_counter()
    try:
        for k, (line, source) in enumerate(python_blocks(path), 1):
            code = compile(source, f"{path.relative_to(ROOT)}:{line}", "exec")
            try:
                exec(code, namespace)  # noqa: S102 - running the docs is the point
            except _Timeout:
                pytest.fail(f"{path.name}: block {k} (line {line}) still running after "
                            f"{BUDGET_S * 2:.0f} s")
            except Exception:  # noqa: BLE001 - report any failure with its location
                pytest.fail(f"{path.name}: block {k} (line {line}) raised:\n"
                            f"{traceback.format_exc(limit=-3)}")
    finally:
        if use_alarm:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)
    elapsed = time.perf_counter() - t0
    assert elapsed < BUDGET_S, f"{path.name}: python blocks took {elapsed:.1f} s > {BUDGET_S} s"
