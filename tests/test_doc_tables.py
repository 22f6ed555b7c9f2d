"""The docs' result tables are generated from committed results files, never typed:
every ``<!-- table: NAME FILES -->`` block must equal what ``benchmarks/tables.py`` makes
of its files (refill with ``python benchmarks/tables.py --docs README.md docs/*.md``)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _tables():
    spec = importlib.util.spec_from_file_location("tables", ROOT / "benchmarks" / "tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("doc", DOCS, ids=[d.name for d in DOCS])
def test_generated_tables_match_their_results_files(doc):
    text = doc.read_text()
    assert _tables().fill_doc(text, ROOT) == text, (
        f"{doc.name}: a generated table differs from its results file; run "
        f"python benchmarks/tables.py --docs {doc.relative_to(ROOT)}")


def test_a_block_is_refilled_from_its_file(tmp_path):
    tables = _tables()
    run = {"task": "lung", "steps": 10, "epochs": 1, "train_seconds": 5.0, "threads": 1,
           "protocol": "8 images; x", "metrics": {"all": {"dice": 0.5}}, "commit": "abc"}
    (tmp_path / "r.json").write_text(__import__("json").dumps(run))
    text = "before\n<!-- table: reference_runs r.json -->\nstale\n<!-- /table -->\nafter\n"
    filled = tables.fill_doc(text, tmp_path)
    assert "stale" not in filled and "| lung | 10 (1) | 5 | 1 | 8 images | 0.5000 |" in filled
    assert filled.startswith("before\n") and filled.endswith("<!-- /table -->\nafter\n")
    with pytest.raises(ValueError, match="unknown table"):
        tables.fill_doc("<!-- table: nope r.json -->\n<!-- /table -->", tmp_path)
