"""RESULTS.md: the table is made from verdict rows as printed, and is written atomically."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.analyses.uncertainty import plain_row, proportion_verdict, verdict_row
from core.results import PAPERS, markdown, parse_pages, write_atomic


def _rows() -> list[dict]:
    holds = verdict_row(proportion_verdict("most picks flip", 90, 100, threshold=0.5))
    unclear = verdict_row(proportion_verdict("a coin is biased", 6, 10, threshold=0.5))
    check = verdict_row(proportion_verdict("last layer = the model", 10, 10, threshold=0.999, kind="check"))
    missing = plain_row("a method needing training", None, "not run: train it first")
    return [{"page": "depth", "preset": "paper", **holds}, {"page": "topk", "preset": "quick", **unclear},
            {"page": "extraction", "preset": "paper", **check}, {"page": "extraction", "preset": "paper", **missing}]


def test_markdown_is_one_table_with_each_claims_numbers() -> None:
    text = markdown(_rows(), "bundled", "python -m core results", {"depth": 12.0})
    table = [line for line in text.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + 4  # header + one row per claim
    flips = next(line for line in table if "most picks flip" in line)
    assert "| 0.9 | 0.826 to 0.945 | 100 | holds |" in flips  # Wilson interval of 90/100
    coin = next(line for line in table if "biased" in line)
    assert "| Paper settings |" in flips and "| Quick look |" in coin
    assert "| 10 | cannot tell at this n |" in coin
    assert "| – | – | 0 | cannot tell yet | not run" in next(line for line in table if "training" in line)
    assert "Findings: holds 1, cannot tell at this n 1, cannot tell yet 1." in text  # the check is not a finding
    assert "`python -m core results`" in text and PAPERS["depth"][2] in flips


def test_pages_take_their_own_preset() -> None:
    assert parse_pages(["depth", "topk=quick"], "paper") == [("depth", "paper"), ("topk", "quick")]
    with pytest.raises(ValueError, match="Unknown preset"):
        parse_pages(["topk=huge"], "paper")
    with pytest.raises(ValueError, match="Unknown page"):
        parse_pages(["nope"], "paper")


def test_write_atomic_leaves_the_old_file_when_writing_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "RESULTS.md"
    write_atomic(target, "old\n")

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("core.results.os.replace", broken)
    with pytest.raises(OSError):
        write_atomic(target, "new\n")
    assert target.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["RESULTS.md"]


def test_results_md_in_the_repo_covers_every_paper() -> None:
    """The committed RESULTS.md is one table with rows of all five papers, each with a preset and a verdict."""
    from core.paths import PROJECT_ROOT

    text = (PROJECT_ROOT / "RESULTS.md").read_text(encoding="utf-8")
    table = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| paper |")]
    pages = {line.split(" | ")[0].removeprefix("| ") for line in table}
    assert pages == {label for _, _, label in PAPERS.values()}, pages
    words = ("holds", "does not hold", "cannot tell at this n", "cannot tell yet")
    assert all(any(f"| {w} |" in line for w in words) for line in table)


def test_rows_round_trip_through_the_file_and_update_keeps_the_other_pages() -> None:
    import math

    from core.results import merge, read_rows

    first = markdown(_rows(), "bundled", "python -m core results", {"depth": 12.0, "topk": 3.0, "extraction": 1.0})
    kept = read_rows(first)
    assert [r["claim"] for r in kept] == [r["claim"] for r in _rows()]
    assert all(r["run"]["command"] == "python -m core results" for r in kept)
    assert math.isnan(kept[-1]["estimate"]) and kept[0]["n"] == 100
    redo = verdict_row(proportion_verdict("a coin is biased", 60, 100, threshold=0.5))
    rows = merge(kept, [{"page": "topk", "preset": "paper", **redo}])
    assert [r["page"] for r in rows] == ["extraction", "extraction", "depth", "topk"]  # PAPERS order, topk replaced
    second = markdown(rows, "bundled", "python -m core results --update --pages topk", {"topk": 99.0})
    assert "Made by `python -m core results` on " in second and "; and by `python -m core results --update --pages " \
        "topk`" in second
    assert "| Top-k order | Paper settings | a coin is biased |" in second
    assert [line for line in first.splitlines() if line.startswith("| ") and "most picks flip" in line] == \
        [line for line in second.splitlines() if line.startswith("| ") and "most picks flip" in line]  # as before
    assert len(read_rows(second)) == 4


def test_a_file_without_rows_as_data_is_refused_for_update() -> None:
    from core.results import read_rows

    with pytest.raises(ValueError, match="older version"):
        read_rows("| paper | preset |\n")
    with pytest.raises(ValueError, match="cannot be read"):
        read_rows("<!-- layerscope-results [{ -->")


def test_the_committed_results_file_can_be_updated() -> None:
    from core.results import read_rows

    rows = read_rows((Path(__file__).resolve().parents[2] / "RESULTS.md").read_text(encoding="utf-8"))
    assert {r["page"] for r in rows} == set(PAPERS)
