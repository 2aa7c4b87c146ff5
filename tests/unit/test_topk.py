"""Top-k order ("Looking Beyond the Top-1"): the definitions on constructed rank sequences, the probe files,
the early-exit bookkeeping, a tiny random-init model, then every text section on the bundled model
(integration)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from numerics import assert_top_k_within_ties

from core.analyses.topk.early_exit import ExitInputs, better_lm_frames, exit_layers, exit_points, first_exit
from core.analyses.topk.ordering import permutation_test, rank_order_table, strict_kendall_tau, two_proportion_z
from core.analyses.topk.probes import (
    Probe,
    balanced_cells,
    evaluate_probe,
    probe_dataset,
    random_feature_control,
    task_labels,
)
from core.analyses.topk.saturation import keep_mask, saturation_layers, saturation_order, slot_match_from_top_ids


def _ids(columns: list[list[int]]) -> np.ndarray:
    """Per slot, the token id at each layer -> top_ids [layer, pos=1, k]."""
    return np.array(columns).T[:, None, :]


# -- saturation -----------------------------------------------------------------------------------------------
def test_a_slot_held_at_every_layer_saturates_at_layer_0() -> None:
    sat = saturation_layers(slot_match_from_top_ids(_ids([[7, 7, 7, 7], [3, 3, 3, 3]])))
    assert sat.tolist() == [[0, 0]]  # the reference returned L here


def test_a_slot_held_only_at_the_last_layer_saturates_at_l_minus_1() -> None:
    sat = saturation_layers(slot_match_from_top_ids(_ids([[1, 2, 3, 9], [9, 9, 9, 4]])))
    assert sat.tolist() == [[3, 3]]  # slot 1 holds token 9 early, but slot 1's FINAL token is 4


def test_a_slot_lost_and_regained_saturates_after_the_last_loss() -> None:
    # slot 0 holds 5 at layers 0, 1, loses it at 2, regains it from 3 on
    sat = saturation_layers(slot_match_from_top_ids(_ids([[5, 5, 8, 5, 5, 5]])))
    assert sat.tolist() == [[3]]


def test_the_slot_definition_is_a_rank_slot_not_membership_of_the_top_k() -> None:
    # token 4 is in the top-2 at every layer but sits in slot 0 until the last layer
    top = _ids([[4, 4, 4, 6], [6, 6, 6, 4]])
    assert saturation_layers(slot_match_from_top_ids(top)).tolist() == [[3, 3]]


def test_saturation_rejects_a_last_layer_that_does_not_hold_its_own_slots() -> None:
    match = np.ones((3, 1, 2), bool)
    match[-1, 0, 1] = False
    with pytest.raises(ValueError, match="last layer"):
        saturation_layers(match)


def test_keep_mask_uses_int_of_ratio_times_l() -> None:
    sat = np.array([[40, 0], [41, 0], [0, 47]])
    assert keep_mask(sat, 48).tolist() == [True, False, True]  # GPT2-XL: s_0 <= int(0.85 * 48) = 40
    with pytest.raises(ValueError):
        keep_mask(np.array([[48, 0]]), 48)


# -- ordering ---------------------------------------------------------------------------------------------------
def test_saturation_order_takes_the_first_of_tied_layers_and_skips_last_layer_slots() -> None:
    order = saturation_order(np.array([[3, 3, 1, 9, 0]]), 10)
    assert order[0, :3].tolist() == [3.0, 3.0, 2.0]  # sorted: 0 1 3 3 9 -> index of 3 = 2 (+1)
    assert math.isnan(order[0, 3]) and order[0, 4] == 1.0


def test_rank_order_table_rises_and_marks_significance_on_ordered_data() -> None:
    rng = np.random.default_rng(0)
    base = np.sort(rng.integers(0, 20, size=(300, 5)), axis=1)
    base = base + np.arange(5)  # strictly increasing per position: rank r saturates r-th
    table = rank_order_table(base, 30)
    assert table["mean_order"].tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert table["sem"].iloc[0] == 0.0 and table["n"].tolist() == [300] * 5
    tied = rank_order_table(np.sort(rng.integers(0, 29, size=(300, 5)), axis=1), 30)  # ordered, with ties
    assert tied["mean_order"].is_monotonic_increasing and tied["stars"].iloc[0] == "***"
    assert tied["p_vs_next"].iloc[0] < 1e-3 and math.isnan(tied["p_vs_next"].iloc[-1])
    mixed = rank_order_table(rng.permuted(base, axis=1), 30)
    assert mixed["mean_order"].between(2.6, 3.4).all()  # shuffled: every rank in the middle


def test_strict_tau_counts_ties_against_the_ordering() -> None:
    taus = strict_kendall_tau(np.array([[1, 2, 3, 4, 5], [1, 1, 2, 3, 4], [2, 2, 2, 2, 2], [3, 2, 1, 0, 4]]), 10)
    assert taus[0] == 1.0
    assert taus[1] == pytest.approx((9 - 1) / 10)  # one tied pair of ten is discordant
    assert taus[2] == -1.0  # all ties: no concordant pair at all
    assert taus[3] == pytest.approx((4 - 6) / 10)


def test_strict_tau_drops_trailing_last_layer_ranks_and_skips_short_prefixes() -> None:
    taus = strict_kendall_tau(np.array([[1, 2, 3, 9, 9], [1, 2, 9, 9, 9], [9, 9, 9, 9, 9], [1, 9, 3, 9, 9]]), 10)
    assert taus[0] == 1.0  # k* = 3
    assert math.isnan(taus[1]) and math.isnan(taus[2])  # k* = 2, 0: skipped
    assert taus[3] == pytest.approx(1 / 3)  # k* = 3: (0,1) C, (0,2) C, (1,2) 9 > 3 D -> (2 - 1) / 3


def test_permutation_p_is_minimal_for_ordered_and_large_for_shuffled_sets() -> None:
    rng = np.random.default_rng(1)
    ordered = np.sort(rng.choice(25, size=(80, 5), replace=True), axis=1) + np.arange(5)
    actual, permuted, p = permutation_test(ordered, 30, n_perm=300, seed=0)
    assert actual == 1.0 and permuted.shape == (300,) and permuted.max() < 1.0
    assert p == pytest.approx(1 / 301)
    shuffled = rng.permuted(ordered, axis=1)
    actual, permuted, p = permutation_test(shuffled, 30, n_perm=300, seed=0)
    assert abs(actual) < 0.2 and p > 0.05
    again = permutation_test(shuffled, 30, n_perm=300, seed=0)
    assert again[2] == p and np.array_equal(again[1], permuted)  # seeded; exact: same computation (same inputs)


# -- task labels and probes ---------------------------------------------------------------------------------------
def test_task_labels_cover_the_layers_between_consecutive_saturations() -> None:
    labels = task_labels(np.array([[7, 9, 12], [3, 9, 12], [8, 6, 12]]), 15, 3)
    assert labels[:, 0].tolist() == [-1] * 5 + [0, 0, 0, 1, 1, 2, 2, 2, -1, -1]
    assert labels[:, 1].tolist() == [-1] * 5 + [1] * 5 + [2] * 3 + [-1, -1]  # s_0 <= 5: no task 0
    # out of order (s_1 < s_0): task 1 is empty, task 2 starts after s_1 and would overlap task 0 -> unlabelled
    assert labels[:, 2].tolist() == [-1] * 5 + [0, 0] + [-1, -1] + [2, 2, 2, 2, -1, -1]
    kept = task_labels(np.array([[7, 9, 12], [7, 9, 12]]), 15, 2, keep=np.array([True, False]))
    assert (kept[:, 1] == -1).all() and (kept[:, 0] >= 0).sum() == 5


def test_probe_dataset_balances_per_layer_and_keeps_the_original_position() -> None:
    labels = np.full((3, 12), -1)
    labels[1, :7] = 0
    labels[1, 7:12] = 1  # layer 1: 7 vs 5 -> 5 of each
    labels[2, :6] = 0
    labels[2, 6:9] = 1  # layer 2: only 3 of task 1 -> skipped
    features = np.arange(3 * 12, dtype=np.float32).reshape(3, 12, 1) * np.ones((1, 1, 2), np.float32)
    X, y, layer = probe_dataset(features, labels)
    assert (layer == 1).all() and np.bincount(y).tolist() == [5, 5]
    assert set(X[:, 0].astype(int) - 12) <= set(range(12))  # read from layer 1 at the cell's own position
    assert all(labels[1, int(v) - 12] == t for v, t in zip(X[:, 0], y))
    assert balanced_cells(labels, 2, max_per_class=2).shape == (4, 2)


def _separable(rng: np.random.Generator, n: int = 120, d: int = 6) -> tuple[np.ndarray, np.ndarray]:
    y = np.repeat(np.arange(3), n // 3)
    X = rng.normal(size=(n, d)) + 3.0 * np.eye(3, d)[y]
    return X.astype(np.float32), y


def test_probe_separates_separable_tasks_and_the_control_does_not_invent_structure() -> None:
    rng = np.random.default_rng(0)
    X, y = _separable(rng)
    frame = evaluate_probe(X, y, 3, folds=4, seed=0)
    bal = frame.query("metric == 'balanced_accuracy'")["value"]
    assert len(bal) == 4 and bal.mean() > 0.85
    assert frame.query("metric == 'auc'")["value"].min() > 0.8
    noise = rng.normal(size=X.shape).astype(np.float32)
    assert evaluate_probe(noise, y, 3, folds=4).query("metric == 'balanced_accuracy'")["value"].mean() < 0.6
    control = random_feature_control(X, y, seed=0)
    assert control.shape == X.shape and not np.allclose(control, X)
    for task in range(3):  # the control keeps each class's scalar mean
        assert control[y == task].mean() == pytest.approx(X[y == task].mean(), abs=0.1)


def test_probe_save_load_round_trip_without_pickle(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    X, y = _separable(rng)
    probe = Probe.fit(X, y, meta={"note": "test"})
    path = probe.save(tmp_path / "probe")
    assert path.suffix == ".npz" and (tmp_path / "probe.json").is_file()
    loaded = Probe.load(tmp_path / "probe.npz")
    # exact: same computation (the float64 parameters round-trip unchanged and predict() is the same code)
    assert np.array_equal(loaded.predict(X), probe.predict(X)) and loaded.meta == {"note": "test"}
    np.testing.assert_allclose(loaded.predict_proba(X).sum(1), 1.0)
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(X)
    ref = OneVsRestClassifier(LogisticRegression(max_iter=1000)).fit(scaler.transform(X), y)
    np.testing.assert_allclose(loaded.predict_proba(X), ref.predict_proba(scaler.transform(X)), atol=1e-6)


def test_probe_files_from_elsewhere_are_never_unpickled(tmp_path: Path) -> None:
    bad = tmp_path / "GPT2_top5_clf.pkl"
    bad.write_bytes(b"\x80\x04K\x01.")
    for name in ("GPT2_top5_clf.pkl", "probe.pt", "probe.joblib"):
        with pytest.raises(ValueError, match="never loaded"):
            Probe.load(tmp_path / name)
    pickled = tmp_path / "sneaky.npz"
    np.savez(pickled, mean=np.array([{"a": 1}], dtype=object), scale=np.ones(1), coef=np.ones((2, 1)),
             intercept=np.ones(2), classes=np.arange(2))
    with pytest.raises(ValueError, match="not a Layerscope probe"):
        Probe.load(pickled)


# -- early exit and better LM -------------------------------------------------------------------------------------
def _exit_inputs() -> ExitInputs:
    # 4 layers, 3 positions; the lens's top-1 per layer; labels: the actual next tokens
    top1 = np.array([[1, 5, 9], [2, 6, 9], [3, 7, 9], [3, 7, 8]])
    return ExitInputs(top1=top1, labels=np.array([3, 6, 8]), sat0=np.array([2, 2, 3]),
                      margin=np.array([[0.1, 0.0, 0.95], [0.6, 0.2, 0.95], [0.9, 0.2, 0.95], [0.9, 0.9, 0.2]]),
                      cosine=np.array([[0.5] * 3, [0.99, 0.5, 0.5], [0.999, 0.5, 0.5], [0.999, 0.5, 0.5]]),
                      probe_task=np.array([[-1] * 3, [0, 2, 1], [1, 2, 1], [1, 2, 1]]))


def test_early_exit_bookkeeping_on_constructed_arrays() -> None:
    inputs = _exit_inputs()
    before = {name: getattr(inputs, name).copy() for name in ExitInputs.__dataclass_fields__}
    points = exit_points(inputs, min_layer=1).set_index(["method", "threshold"])
    baseline = points.xs("baseline", level=0).iloc[0]
    oracle = points.xs("oracle", level=0).iloc[0]
    assert baseline.accuracy == pytest.approx(2 / 3) and baseline.speedup == 1.0
    assert oracle.accuracy == baseline.accuracy  # exiting at s_0 predicts the final top-1 by definition
    assert oracle.speedup == pytest.approx(12 / (3 + 3 + 4))
    probe = points.xs("probe", level=0).iloc[0]  # exits at l0 = 2, never (4 blocks), 1 -> preds 3, 7, 9
    assert probe.speedup == pytest.approx(12 / (3 + 4 + 2)) and probe.accuracy == pytest.approx(1 / 3)
    later = points.xs("probe (task ≥ 2)", level=0).iloc[0]  # 2, 1 (task 2 counts), 1 -> 3, 6, 9
    assert later.speedup == pytest.approx(12 / (3 + 2 + 2)) and later.accuracy == pytest.approx(2 / 3)
    soft = points.xs("softmax response", level=0)
    assert soft.loc[0.5].speedup == pytest.approx(12 / (2 + 4 + 1))  # exits 1, never, 0
    state = points.xs("hidden-state saturation", level=0)
    assert state.loc[0.99].speedup == pytest.approx(12 / (2 + 4 + 4))  # l0 >= 1 only
    for name, value in before.items():  # inputs untouched
        assert np.array_equal(getattr(inputs, name), value)


def test_every_method_gets_its_own_exit_array() -> None:
    arrays = [layer for _m, _t, layer in exit_layers(_exit_inputs(), min_layer=1)]
    for i, a in enumerate(arrays):
        for b in arrays[i + 1:]:
            assert not np.shares_memory(a, b)
    cond = np.zeros((3, 2), bool)
    out = first_exit(cond, 1)
    assert out.tolist() == [2, 2] and not cond.any()  # never -> the output layer; the input is not modified


def test_two_proportion_z_against_a_hand_value() -> None:
    z, p = two_proportion_z(30, 100, 20, 100)  # pooled 0.25, se = sqrt(.25 * .75 * .02) = 0.0612372
    assert z == pytest.approx(0.1 / 0.0612372, rel=1e-5) and p == pytest.approx(0.1024704, rel=1e-5)
    assert all(math.isnan(v) for v in two_proportion_z(0, 0, 3, 10))


def test_better_lm_groups_by_top2_saturation() -> None:
    from core.analyses.topk.collect import TextRecord

    n_layers = 10
    # 3 positions with a next token (+1 final): final top-1/top-2 per position
    top = np.zeros((n_layers, 4, 2), np.int64)
    top[:, :, 0] = [11, 12, 13, 14]
    top[:, :, 1] = [21, 22, 23, 24]
    top[:9, 0, 1] = 99  # position 0: top-2 settles at the last layer only (group A)
    top[:9, 1, 1] = 99  # position 1: the same
    # position 2: top-2 held from layer 0 (group B)
    record = TextRecord(input_ids=np.array([5, 21, 30, 23]), top_ids=top, top_probs=np.zeros(top.shape, np.float32),
                        cosine=np.zeros((n_layers, 4), np.float32), n_tokens_original=4, first_pos=0)
    frames = better_lm_frames([record])
    assert frames["groups"]["positions"].tolist() == [2, 1]
    assert frames["groups"]["top2_correct"].tolist() == [1, 1]  # pos 0: label 21 = top-2; pos 2: 23 = top-2
    assert frames["test"]["top1_wrong"].iloc[0] == 3 and frames["test"]["positions"].iloc[0] == 3


# -- the one layer convention: frames in residual layers, maths on the 0-based arrays -----------------------------
def _record(top_ids: np.ndarray, first_pos: int = 0):
    """A constructed TextRecord around [block, pos, k] top-k ids (next tokens = position + 1000)."""
    from core.analyses.topk.collect import TextRecord

    n_layers, n_pos, _ = top_ids.shape
    return TextRecord(input_ids=np.arange(n_pos) + 1000, top_ids=top_ids, top_probs=np.zeros(top_ids.shape, np.float32),
                      cosine=np.zeros((n_layers, n_pos), np.float32), n_tokens_original=n_pos, first_pos=first_pos)


def _random_records(n_layers: int = 12, n_pos: int = 40, k: int = 4, seed: int = 0) -> list:
    """Records whose slots settle at random layers (some held after every block, some only at the output)."""
    rng = np.random.default_rng(seed)
    records = []
    for _ in range(3):
        final = rng.permutation(500)[:n_pos * k].reshape(n_pos, k) + 10  # distinct final ids per position
        top = np.broadcast_to(final, (n_layers, n_pos, k)).copy()
        settle = rng.integers(0, n_layers, size=(n_pos, k))  # block index from which each slot holds
        for layer in range(n_layers):
            top[layer][settle > layer] = 5 + layer % 2  # a placeholder token before the slot settles
        top[:, 0, :] = final[0]  # position 0: every slot held after every block
        records.append(_record(top))
    return records


def test_the_saturation_frames_are_residual_layers_and_the_maths_is_the_0_based_one() -> None:
    from core.analyses.topk.collect import pooled_saturation
    from core.analyses.topk.params import TopkParams
    from core.analyses.topk.sections import ordering_frames

    records, n_layers, params = _random_records(), 12, TopkParams(n=3, k=4, n_perm=50, ratio=0.85)
    frames = ordering_frames(records, params, "m")
    sat, _ = pooled_saturation(records)  # [pos, k] 0-based block indices, as the paper defines them
    long = frames["saturation"]
    # exact: same computation (the frame's layers are the same integers, block index + 1)
    assert long.saturation_layer.tolist() == (sat.ravel() + 1).tolist()
    assert long.saturation_layer.between(1, n_layers).all()  # never 0: no block output is the embeddings
    held = long[long.position == 0]
    assert (held.saturation_layer == 1).all()  # held after every block: layer 1 = after block 1 (block index 0)
    assert sat.max() == n_layers - 1 and long.saturation_layer.max() == n_layers  # settled only at the output: L
    summary = frames["summary"].iloc[0]
    assert summary.max_top1_layer == int(0.85 * n_layers) + 1  # the paper's bound int(0.85·L) on block indices
    keep = keep_mask(sat, n_layers, 0.85)  # the filter on the 0-based array keeps the same positions
    assert long.kept.tolist() == np.repeat(keep, 4).tolist() and summary.kept == keep.sum()
    assert 0 < keep.sum() < len(keep)  # the filter drops some positions here, so the comparison means something
    assert ((long.saturation_layer.groupby(long.index // 4).first() <= summary.max_top1_layer).to_numpy() == keep).all()
    taus = strict_kendall_tau(sat[keep], n_layers)
    # exact: same computation (the same 0-based array through the same functions)
    np.testing.assert_array_equal(frames["tau"].tau.to_numpy(), taus)
    actual, _, p = permutation_test(sat[keep], n_layers, 50, params.seed)
    assert summary.mean_tau == actual and summary.perm_p == p  # exact: same computation
    histogram = frames["histogram"]
    assert histogram.saturation_layer.min() == 1 and histogram.saturation_layer.max() == n_layers
    # relative depth is unchanged by the relabelling: (block index + 1) / L = layer / L
    np.testing.assert_allclose(histogram.relative_depth, histogram.saturation_layer / n_layers)


def test_probe_layer_frames_are_residual_layers() -> None:
    from core.analyses.topk.probing import per_layer_frame

    rng = np.random.default_rng(0)
    X, y = _separable(rng, n=120)
    blocks = np.repeat([5, 7], 60)  # 0-based block indices of the rows: the paper's first probe layer 5, and 7
    frame = per_layer_frame(X, y, blocks, 3, 3, 0, random_feature_control(X, y))
    assert sorted(frame.layer.unique()) == [6, 8]  # after block 6 and after block 8


def test_better_lm_groups_name_residual_layers_and_keep_the_papers_bound() -> None:
    n_layers = 10
    top = np.zeros((n_layers, 3, 2), np.int64)
    top[:, :, 0] = [11, 12, 13]
    top[:, :, 1] = [21, 22, 23]
    top[:3, 0, 1] = 99  # position 0: top-2 held from block index 3 = L - 7 (the paper's bound: group B)
    top[:4, 1, 1] = 99  # position 1: from block index 4 > L - 7: neither group
    frames = better_lm_frames([_record(top)])
    groups = frames["groups"]
    assert groups["positions"].tolist() == [0, 1]
    assert "by layer 4" in groups.group.iloc[1] and "L−7" in groups.group.iloc[1]  # block index 3 = layer 4
    assert groups.group.iloc[0].endswith("last layer, 10")


# -- a tiny random-init model ---------------------------------------------------------------------------------------
def test_the_last_layer_slots_are_the_models_own_top_k(make_session) -> None:
    from core.analyses.topk.collect import compute_record

    for arch in ("llama", "gpt2"):
        session = make_session(arch)
        record = compute_record(session, "The capital of France is Paris, and the capital of Italy is Rome.", 5, 64)
        with torch.no_grad():
            logits = session.model(torch.as_tensor(record.input_ids)[None]).logits[0]  # [pos, vocab]
        # different computations (the record's chunked lens readout vs a separate forward of the model): the
        # top-5 ids up to near-ties of the reference logits (numerics.logit_tol)
        assert_top_k_within_ties(record.top_ids[-1], logits)
        np.testing.assert_allclose(record.top_probs[-1], logits.softmax(-1).topk(5).values.numpy(), rtol=1e-4)
        sat = record.saturation()
        assert sat.shape == (len(record.input_ids), 5) and sat.min() >= 0 and sat.max() <= session.adapter.n_layers - 1
        assert record.cosine.shape == (session.adapter.n_layers, len(record.input_ids))
        assert np.all(np.abs(record.cosine) <= 1.0 + 1e-5)


def test_the_slot_view_is_in_residual_layers(make_session) -> None:
    from core.analyses.topk.collect import compute_record, slot_view

    session = make_session("llama")
    n_layers = session.adapter.n_layers
    record = compute_record(session, "The capital of France is Paris, and the capital of Italy is Rome.", 3, 64)
    view = slot_view(session, record)
    assert sorted(view.layer.unique()) == list(range(1, n_layers + 1))  # after block 1 .. after block L
    sat = record.saturation()  # [pos, k] block indices of the analysed positions
    first = view.drop_duplicates(["position", "slot"]).sort_values(["position", "slot"])
    # exact: same computation (the same integers, block index + 1)
    assert first.saturation_layer.tolist() == (sat.ravel() + 1).tolist()
    held = view[view.held]
    assert (held.layer >= 1).all() and view.saturation_layer.between(1, n_layers).all()
    # a slot holds its final token from its saturation layer on, at every later layer
    after = view[view.layer >= view.saturation_layer]
    assert after.held.all()


def test_texts_are_truncated_and_counted(make_session) -> None:
    from core.analyses.topk.collect import compute_record, text_counts

    session = make_session("llama")
    long_text = "The quick brown fox jumps over the lazy dog. " * 20
    record = compute_record(session, long_text, 3, 16)
    assert len(record.input_ids) == 16 and record.truncated and record.n_tokens_original > 16
    counts = text_counts([record])
    assert counts["truncated_texts"] == 1 and counts["tokens_dropped_by_truncation"] == record.n_tokens_original - 16


def test_bad_parameters_are_value_errors() -> None:
    from core.analyses.topk.params import TopkParams

    for params in (TopkParams(k=1), TopkParams(n_tasks=6), TopkParams(max_tokens=2), TopkParams(folds=1),
                   TopkParams(ratio=1.5), TopkParams(n=0)):
        with pytest.raises(ValueError):
            params.check()
    with pytest.raises(ValueError):
        task_labels(np.zeros((2, 3), int), 10, 4)


def test_the_cli_rejects_bad_input_with_one_line_and_status_2(capsys) -> None:
    from core.cli.main import main

    for argv in (["topk", "saturation", "--k", "1"], ["topk", "probing", "--table", "nope"],
                 ["topk", "early-exit", "--n", "0"], ["topk", "baseline", "--ratio", "0"]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and "\n" not in err and "Traceback" not in err


def test_early_exit_texts_are_disjoint_from_the_probe_texts() -> None:
    from core.analyses.topk.collect import topk_texts

    train, held = topk_texts(30, 5), topk_texts(20, 5, offset=30)
    assert len(set(train)) == 30 and not set(train) & set(held)
    assert topk_texts(30, 5) == train and topk_texts(30, 6) != train  # seeded
    with pytest.raises(ValueError, match="at most"):
        topk_texts(10, 0, offset=10**6)
