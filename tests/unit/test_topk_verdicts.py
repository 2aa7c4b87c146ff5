"""Top-k verdicts (core.analyses.topk.verdicts) on constructed frames: each claim once holding, once not, once
"cannot tell at this n"; the presets and the method notes are torch-free and complete."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.analyses.topk import verdicts as v
from core.analyses.topk.params import PRESETS, SECTIONS, preset_params

L = 10  # layers of the constructed model (residual layers 1..L)


def _saturation(rows: list[list[int]]) -> pd.DataFrame:
    """[pos][rank] residual saturation layers -> the saturation section's long table (all kept)."""
    return pd.DataFrame([{"text": 0, "position": p, "rank": r + 1, "saturation_layer": s, "kept": True}
                         for p, row in enumerate(rows) for r, s in enumerate(row)])


@pytest.mark.parametrize(("rows", "wording"), [
    ([[1, 2, 3, 4]] * 30, "holds"),  # every rank settles after the one before
    ([[4, 3, 2, 1]] * 30, "does not hold"),  # the reverse order
    ([[1, 2, 3, 4], [2, 1, 4, 3]] * 2, "cannot tell at this n"),  # half in order, half swapped, n = 4
])
def test_rank_order(rows: list[list[int]], wording: str) -> None:
    row = v.rank_order_verdict(_saturation(rows), L)
    assert row["verdict"] == wording, row
    assert "n = " in row["evidence"] and "95 % CI" in row["evidence"]


def _tau_frames(taus: list[float], perm_mean: float = -0.2) -> tuple[pd.DataFrame, pd.DataFrame]:
    summary = pd.DataFrame([{"perm_mean_tau": perm_mean, "perm_p": 0.001, "n_perm": 1000}])
    return pd.DataFrame({"tau": taus}), summary


@pytest.mark.parametrize(("taus", "zero", "perm"), [
    ([0.6, 0.8, 1.0] * 20, "holds", "holds"),
    ([-0.6, -0.8, -1.0] * 20, "does not hold", "does not hold"),
    ([1.0, -1.0, 0.2, -0.2], "cannot tell at this n", "cannot tell at this n"),
])
def test_tau_against_zero_and_the_permutations(taus: list[float], zero: str, perm: str) -> None:
    rows = v.tau_verdicts(*_tau_frames(taus))
    assert [r["verdict"] for r in rows] == [zero, perm]
    assert "permutation p = 0.001" in rows[0]["evidence"]


@pytest.mark.parametrize(("probe", "control", "rows", "chance", "vs_control"), [
    (0.8, 0.4, 1000, "holds", "holds"),
    (0.1, 0.6, 1000, "does not hold", "does not hold"),
    (0.3, 0.25, 20, "cannot tell at this n", "cannot tell at this n"),
])
def test_probe(probe: float, control: float, rows: int, chance: str, vs_control: str) -> None:
    summary = pd.DataFrame([{"task": -1, "metric": "balanced_accuracy", "mean": m, "source": s}
                            for m, s in ((probe, "probe"), (control, "random-feature control"), (0.25, "chance"))])
    dataset = pd.DataFrame({"layer": [6] * 4, "task": range(4), "rows": [rows // 4] * 4})
    got = v.probe_verdicts(summary, dataset)
    assert [r["verdict"] for r in got] == [chance, vs_control], got
    assert got[0]["n"] == rows


def _twin(trained: list[float], twin: list[float]) -> tuple[pd.DataFrame, pd.DataFrame]:
    tau = pd.concat([pd.DataFrame({"model": "trained", "tau": trained}),
                     pd.DataFrame({"model": "random-init twin", "tau": twin})])
    summary = pd.DataFrame([{"model": m, "perm_mean_tau": -0.3, "perm_p": 0.5, "n_perm": 100}
                            for m in ("trained", "random-init twin")])
    return tau, summary


@pytest.mark.parametrize(("trained", "twin", "weaker", "above"), [
    ([0.8, 0.9, 1.0] * 20, [0.0, 0.1, 0.2] * 20, "holds", "holds"),
    ([0.0, 0.1, 0.2] * 20, [0.8, 0.9, 1.0] * 20, "does not hold", "holds"),
    ([0.5, -0.5, 0.3], [0.3, -0.5, -1.0], "cannot tell at this n", "cannot tell at this n"),
])
def test_twin(trained: list[float], twin: list[float], weaker: str, above: str) -> None:
    rows = v.twin_verdicts(*_twin(trained, twin))
    assert [r["verdict"] for r in rows] == [weaker, above], rows
    assert rows[1]["claim"] == v.CLAIMS["twin_perm"]


def _pairs(after: list[bool], before: list[bool]) -> pd.DataFrame:
    rows = []
    for p, (a, b) in enumerate(zip(after, before)):
        rows += [{"text": 0, "early_pos": p, "late_pos": p + 1, "offset": o, "success": a if o >= 0 else b}
                 for o in (-2, -1, 0, 1)]
    return pd.DataFrame(rows)


@pytest.mark.parametrize(("after", "before", "wording"), [
    ([True] * 30, [False] * 30, "holds"),
    ([False] * 30, [False] * 30, "does not hold"),
    ([True, False, True], [False, False, False], "cannot tell at this n"),
])
def test_intervention(after: list[bool], before: list[bool], wording: str) -> None:
    assert v.intervention_verdict(_pairs(after, before))["verdict"] == wording


def test_early_exit_is_a_check() -> None:
    points = pd.DataFrame({"method": ["baseline", "oracle"], "accuracy": [0.4, 0.4], "positions": [100, 100]})
    row = v.early_exit_check(points)
    assert row["kind"] == "check" and row["verdict"] == "holds"
    assert v.early_exit_check(points.assign(accuracy=[0.4, 0.3]))["verdict"] == "does not hold"
    assert v.early_exit_check(None)["verdict"] == "cannot tell yet"


@pytest.mark.parametrize(("late", "early", "wording"), [
    ((100, 1000), (500, 1000), "holds"),
    ((500, 1000), (100, 1000), "does not hold"),
    ((2, 10), (3, 10), "cannot tell at this n"),
])
def test_better_lm(late: tuple[int, int], early: tuple[int, int], wording: str) -> None:
    groups = pd.DataFrame([{"group": "A", "top2_correct": late[0], "positions": late[1]},
                           {"group": "B", "top2_correct": early[0], "positions": early[1]}])
    assert v.better_lm_verdict(groups)["verdict"] == wording


@pytest.mark.parametrize(("rows", "wording"), [
    ([[1, 2, 3]] * 30, "holds"),
    ([[3, 2, 1]] * 30, "does not hold"),
    ([[1, 2, 3], [3, 2, 1], [1, 3, 2]], "cannot tell at this n"),
])
def test_modality(rows: list[list[int]], wording: str) -> None:
    sat = pd.DataFrame([{"input": p, "position": 0, "rank": r + 1, "sat_layer": s, "kept": True}
                        for p, row in enumerate(rows) for r, s in enumerate(row)])
    frames = {"saturation": sat, "summary": pd.DataFrame([{"n_layers": L, "random_init": True}]),
              "kendall": pd.DataFrame([{"perm_mean": -0.3, "p": 0.01, "n_perm": 100}])}
    row = v.modality_verdict(frames, "vit")
    assert row["verdict"] == wording and row["claim"].startswith("ViT")


def test_all_claims_without_results_say_not_run() -> None:
    rows = v.verdicts({}, {"intervention": "not run: no data"})
    assert len(rows) == 10 and all(r["holds"] is None for r in rows)
    assert any(r["evidence"] == "not run: no data" for r in rows)
    assert sum(r["kind"] == "check" for r in rows) == 1


def test_newcombe_matches_a_known_interval() -> None:
    # Newcombe (1998) method 10, 56/70 vs 48/80: difference 0.2000, 95 % CI 0.0524 to 0.3339
    d, low, high = v.newcombe(56, 70, 48, 80)
    assert d == pytest.approx(0.2) and low == pytest.approx(0.0524, abs=1e-3) and high == pytest.approx(0.3339,
                                                                                                          abs=1e-3)


def test_presets_are_valid_parameters() -> None:
    for name in PRESETS:
        preset_params(name).check()
    assert preset_params("paper").n_perm == 1000 and preset_params("paper").k == 5
    assert preset_params("paper").n + preset_params("paper").n_eval <= 3220  # the bundled evaluation paragraphs
    with pytest.raises(ValueError, match="Unknown preset"):
        preset_params("bogus")


def test_every_tab_has_a_method_note() -> None:
    from core.analyses.topk.method_notes import METHOD_NOTES

    assert set(SECTIONS) | {"intervention", "modalities", "verdict"} <= set(METHOD_NOTES)
    assert np.all([".." not in text for text in METHOD_NOTES.values()])
