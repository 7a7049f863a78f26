"""The three-seed tables: the record is as new as each chapter's code, and gap_on_seeds reports what it is given."""

import json
from pathlib import Path

import pytest

from lossbook import spread

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = sorted(p for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb") if "gap_on_seeds(" in p.read_text())


def test_the_demo_chapters_show_three_seeds():
    assert len(CHAPTERS) >= 10, [p.name for p in CHAPTERS]


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_the_record_is_as_new_as_the_chapters_code(path):
    record = json.loads(spread.RECORD.read_text()).get(path.stem)
    again = f"re-record: .venv/bin/python scripts/seeds.py notebooks/{path.name} --record"
    assert record is not None, f"notebooks/seed_spread.json has no {path.stem}; {again}"
    assert sorted(record["seeds"]) == ["1", "2"], f"{path.stem}: seeds {sorted(record['seeds'])}; {again}"
    assert record["code_sha256"] == spread.code_fingerprint(path), (
        f"{path.name}'s code cells changed since seeds 1 and 2 were recorded; {again}"
    )


@pytest.fixture
def record(tmp_path, monkeypatch):
    path = tmp_path / "seed_spread.json"
    monkeypatch.setattr(spread, "RECORD", path)
    monkeypatch.delenv("LOSSBOOK_SEED_RECORD", raising=False)
    return path


def test_gap_on_seeds_prints_this_run_beside_the_record(record, capsys):
    rows = {"1": {"acc": [0.9, 0.7], "nll": [2.0, 3.0]}, "2": {"acc": [0.8, 0.85], "nll": [2.5, 2.0]}}
    record.write_text(json.dumps({"ch": {"code_sha256": "x", "recorded_with": "by hand", "seeds": rows}}))
    spread.gap_on_seeds("ch", 0, {"acc": (0.95, 0.5), "nll": (1.0, 4.0)}, lower_is_better={"nll"})
    out = capsys.readouterr().out
    assert "0 this run    0.950      0.500     +0.450" in out
    assert "2 recorded    0.800      0.850     -0.050" in out  # a seed where the mistake wins shows so
    assert "0 this run    1.000      4.000     +3.000" in out  # lower is better: mistake - fix
    assert "2 recorded    2.500      2.000     -0.500" in out
    assert "recorded seeds: by hand" in out


def test_a_missing_or_stale_record_is_an_error_that_says_how_to_make_it(record):
    with pytest.raises(RuntimeError, match=r"no seed 1 for 'ch'.*scripts/seeds.py notebooks/ch.ipynb --record"):
        spread.gap_on_seeds("ch", 0, {"acc": (0.9, 0.5)})
    rows = {"1": {"other": [0.9, 0.7]}, "2": {"other": [0.8, 0.85]}}
    record.write_text(json.dumps({"ch": {"code_sha256": "x", "recorded_with": "", "seeds": rows}}))
    with pytest.raises(RuntimeError, match="no seed 1"):  # recorded for other metrics
        spread.gap_on_seeds("ch", 0, {"acc": (0.9, 0.5)})


def test_a_recording_run_writes_its_row(record, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LOSSBOOK_SEED_RECORD", str(tmp_path / "gaps"))
    spread.gap_on_seeds("ch", 2, {"acc": (0.9, 0.5)})  # no record yet: the recording run goes on
    assert json.loads((tmp_path / "gaps" / "ch.seed2.json").read_text()) == {"acc": [0.9, 0.5]}
    assert "2 this run" in capsys.readouterr().out


def test_bad_arguments_are_named(record):
    with pytest.raises(ValueError, match="lower_is_better names metrics not in gaps: \\['nll'\\]"):
        spread.gap_on_seeds("ch", 0, {"acc": (0.9, 0.5)}, lower_is_better={"nll"})
    with pytest.raises(ValueError, match="gap_on_seeds"):
        spread.gap_on_seeds("ch", 0, {})


def test_the_fingerprint_follows_code_not_prose(tmp_path):
    def notebook(code, prose):
        cells = [{"cell_type": "markdown", "source": prose, "metadata": {}},
                 {"cell_type": "code", "source": code, "metadata": {}, "outputs": []},
                 {"cell_type": "code", "source": "lossbook.spread.gap_on_seeds(...)", "metadata": {}, "outputs": []},
                 {"cell_type": "code", "source": "exercise = 1", "metadata": {}, "outputs": []}]
        path = tmp_path / f"nb{len(list(tmp_path.iterdir()))}.ipynb"
        path.write_text(json.dumps({"cells": cells}))
        return spread.code_fingerprint(path)

    base = notebook("x = 1", "text")
    assert notebook("x = 1", "other text") == base
    assert notebook("x = 2", "text") != base
