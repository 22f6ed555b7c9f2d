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


def test_the_ablation_table_reads_the_recipe_or_parses_the_recorded_command():
    """A results file written before ``recipe`` existed is read through the example's own
    parser, so its defaults (preset small on real data, aux weighting alpha2) are exact."""
    tables = _tables()
    base = {"steps": 2160, "epochs": 20, "train_seconds": 3773.8, "checkpoint":
            "runs/ref_infection/checkpoints/step_00002160.safetensors",
            "protocol": "446 validation images, ddim with 2 steps, micro metrics; x",
            "metrics": {"all": {"dice": 0.7}, "COVID-19": {"dice": 0.75, "sensitivity": 0.69}}}
    old = {**base, "command": "examples/covid_qu_seg.py --data-root /data --task infection "
                              "--aux-loss dice_bce --no-augment"}
    new = {**base, "recipe": {"preset": "fast", "aux_loss": "dice_bce",
                              "aux_weighting": "uniform", "augment": True}}
    ramp = {**base, "recipe": {**new["recipe"], "time_power": 2.0}}
    concat = {**base, "recipe": {**new["recipe"], "cond": "concat", "intensity_augment": True}}
    self_cond = {**base, "recipe": {**new["recipe"], "self_condition": True}}
    rows = tables.ablation_table([old, new, ramp, concat, self_cond]).splitlines()[2:]
    assert rows[0].startswith("| ref_infection | small | add | dice_bce (alpha2) | uniform | no "
                              "| 2,160 (20) | 3774 | 446 validation images, ddim with 2 steps "
                              "| 0.7000 | 0.7500 | 0.6900 |")
    assert "| fast | add | dice_bce (uniform) | uniform | yes |" in rows[1]
    assert "| fast | add | dice_bce (uniform) | t^1 | yes |" in rows[2]
    assert "| fast | concat | dice_bce (uniform) | uniform | yes + intensity |" in rows[3]
    assert "| fast | add + self-cond | dice_bce (uniform) |" in rows[4]


def test_the_unconditional_runs_table_reads_the_examples_record():
    tables = _tables()
    run = {"sde": "ve", "prediction": "v", "preset": "fast", "train_steps": 3480,
           "wall_seconds": 1500.4, "commit": "abc1234",
           "samples": {"stats": {"in_range": 0.9712, "min": -1.234, "max": 1.5,
                                 "mean_image_corr": 0.98, "histogram_tv": 0.05,
                                 "std_ratio": 1.0}}}
    row = tables.unconditional_runs_table([run]).splitlines()[2]
    assert row == ("| VE / NCSN (v) | fast | 3,480 | 1,500 s | 0.971 | -1.23..1.50 | 0.980 "
                   "| 0.050 | 1.00 | abc1234 |")


def test_the_synthesis_table_puts_each_budget_in_its_column():
    tables = _tables()
    rows = [{"sampler": "ddim", "nfe_budget": 5, "nfe": 5, "frechet": 2.6612},
            {"sampler": "ddim", "nfe_budget": 10, "nfe": 10, "frechet": 1.6},
            {"sampler": "ode:rk4", "nfe_budget": 10, "nfe": 9, "frechet": 1.382}]
    res = {"checkpoint": "runs/uncond_vp/checkpoints/step_1.safetensors", "rows": rows,
           "classifier": {"val_accuracy": 0.8251}, "floor": {"frechet": 0.09177}}
    lines = tables.synthesis_table([res]).splitlines()
    assert lines[0].endswith("| sampler | NFE 5 | NFE 10 |")
    assert lines[2] == "| uncond_vp | 0.825 | 0.0918 | ddim | 2.66 | 1.6 |"
    assert lines[3] == "| uncond_vp | 0.825 | 0.0918 | ode:rk4 | – | 1.38 (9) |"


def test_the_seeds_table_gives_each_seed_and_the_mean_and_sample_sd():
    tables = _tables()
    base = {"epochs": 30, "train_seconds": 1000.0, "recipe": {"preset": "fast"},
            "command": "examples/covid_qu_seg.py --task infection"}
    runs = [{**base, "checkpoint": f"runs/s{i}/checkpoints/c.safetensors",
             "metrics": {"all": {"dice": a}, "COVID-19": {"dice": c}}, **extra}
            for i, (a, c, extra) in enumerate([(0.78, 0.79, {}), (0.80, 0.81, {"seed": 2}),
                                                (0.79, 0.80, {"command": "x --seed 1"})])]
    rows = tables.seeds_table(runs).splitlines()
    assert [r.split(" | ")[1] for r in rows[2:5]] == ["0", "1", "2"]  # sorted by seed
    # mean 0.79, sample sd sqrt(((-0.01)^2 + 0 + 0.01^2) / 2) = 0.01
    assert rows[5] == "| **mean ± sd** (3 seeds) | | | 0.7900 ± 0.0100 | 0.8000 ± 0.0100 |"
    with pytest.raises(ValueError, match="differ in more than the seed"):
        tables.seeds_table([runs[0], {**runs[1], "epochs": 60}])
    with pytest.raises(ValueError, match="appears twice"):
        tables.seeds_table([runs[0], {**runs[1], "seed": 0}])


def test_the_cli_refills_a_doc_and_refuses_missing_files_in_one_line(tmp_path, capsys):
    tables = _tables()
    run = {"task": "lung", "steps": 10, "epochs": 1, "train_seconds": 5.0, "threads": 1,
           "protocol": "8 images; x", "metrics": {"all": {"dice": 0.5}}, "commit": "abc"}
    (tmp_path / "r.json").write_text(__import__("json").dumps(run))
    doc = tmp_path / "doc.md"
    block = f"<!-- table: reference_runs {tmp_path / 'r.json'} -->\nstale\n<!-- /table -->\n"
    doc.write_text(block)
    assert tables.main(["--docs", str(doc)]) == 0
    assert "| lung | 10 (1) |" in doc.read_text() and "stale" not in doc.read_text()
    for argv in ([], [str(tmp_path / "missing.json")]):
        with pytest.raises(SystemExit) as exc:
            tables.main(argv)
        assert exc.value.code == 2
        assert "Traceback" not in capsys.readouterr().err
