"""Neuron topics: the integer program against brute force, NPMI by hand, the star heuristic's invariants,
the four modes against the models' own forward passes, the pool rules, and the bundled model (integration)."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from core.analyses.topics.corpus import (
    corpus_counts,
    count_corpus,
    folder_documents,
    npmi_matrix,
    pair_count_matrix,
)
from core.analyses.topics.neuron import TopicParams
from core.analyses.topics.vocab import WordMap, pool_from, random_extremes, vocab_logits
from core.analyses.topics.word_sets import best_topic, coherence, star_heuristic


def _random_graph(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w = rng.uniform(-0.5, 0.6, (n, n))
    w = (w + w.T) / 2
    np.fill_diagonal(w, 0.0)
    return w


TIE = 1e-9  # coherences (~0.1, float64) of two k-sets closer than this count as tied


def _brute_force(w: np.ndarray, k: int) -> tuple[set[tuple[int, ...]], float]:
    """-> (every k-set whose coherence is within TIE of the best, the best coherence).

    The solver sums the same float64 weights in another order than :func:`coherence`, so a k-set tied with the
    best up to rounding may win there: the optimum is checked up to such near-ties."""
    scores = {c: coherence(w, c) for c in itertools.combinations(range(len(w)), k)}
    best = max(scores.values())
    return {c for c, score in scores.items() if score >= best - TIE}, best


@pytest.mark.parametrize("n,k,seed", [(8, 3, 0), (9, 4, 1), (11, 5, 2), (14, 4, 3), (14, 6, 4), (12, 10, 5),
                                      (13, 10, 6)])
def test_integer_program_equals_brute_force(n: int, k: int, seed: int) -> None:
    w = _random_graph(n, seed)
    members = tuple(range(n))
    topic = best_topic(w, members, k=k, time_limit=60)
    optima, score = _brute_force(w, k)
    assert topic.status == "optimal"
    # different computations (HiGHS' MILP vs brute force): the chosen k-set is a brute-force optimum up to TIE
    assert topic.members in optima
    assert topic.coherence == pytest.approx(score, abs=TIE)


def test_topic_works_on_a_subset_and_reports_small_sets() -> None:
    w = _random_graph(12, 7)
    members = (1, 3, 4, 6, 7, 9, 11)
    topic = best_topic(w, members, k=4)
    sub = w[np.ix_(members, members)]
    optima, score = _brute_force(sub, 4)
    # different computations (MILP vs brute force): a brute-force optimum up to near-ties of the coherence (TIE)
    assert topic.members in {tuple(sorted(members[i] for i in chosen)) for chosen in optima}
    assert topic.coherence == pytest.approx(score)
    assert best_topic(w, (1, 2, 3), k=4).status == "too few words"
    exact = best_topic(w, (1, 2, 3, 4), k=4)
    assert exact.members == (1, 2, 3, 4) and exact.coherence == pytest.approx(coherence(w, (1, 2, 3, 4)))


def test_time_limit_is_flagged_and_an_incumbent_is_still_a_k_set() -> None:
    w = _random_graph(44, 8)
    topic = best_topic(w, tuple(range(44)), k=10, time_limit=0.05)
    assert topic.status in ("time limit", "time limit, no solution")
    if topic.found:
        assert len(topic.members) == 10 and topic.coherence == pytest.approx(coherence(w, topic.members))
    else:
        assert math.isnan(topic.coherence)


# -- NPMI ---------------------------------------------------------------------------------------------
HAND_DOCS = ["apple banana.", "Apple, banana!", "apple cherry", "banana cherry dates"]


def test_window_counts_and_npmi_by_hand() -> None:
    counts = count_corpus(HAND_DOCS, "hand")
    assert counts.n_windows == 4  # four documents of <= 10 words: one window each
    ix = counts.index()
    ids = np.array([ix[w] for w in ("apple", "banana", "cherry", "dates")])
    assert counts.word_counts[ids].tolist() == [3, 3, 2, 1]
    c = pair_count_matrix(counts, ids)
    assert c[0, 1] == 2 and c[0, 2] == 1 and c[1, 2] == 1 and c[1, 3] == 1 and c[2, 3] == 1 and c[0, 3] == 0
    m = npmi_matrix(counts, ids, min_freq=1)
    # p(apple)=p(banana)=3/4, p(cherry)=1/2, p(dates)=1/4; NPMI = ln((p_ab+1e-12)/(p_a p_b)) / -ln(p_ab+1e-12)
    assert m[0, 1] == pytest.approx(-0.169925001, abs=1e-8)  # ln(8/9)/ln 2
    assert m[2, 3] == pytest.approx(0.5, abs=1e-8)  # ln 2 / ln 4
    assert m[1, 3] == pytest.approx(0.207518750, abs=1e-8)  # ln(4/3) / ln 4
    assert m[1, 2] == pytest.approx(-0.292481250, abs=1e-8)  # ln(2/3) / ln 4
    assert m[0, 3] == pytest.approx(-0.939416773, abs=1e-8)  # never together: ln(1e-12/(3/16)) / -ln(1e-12)
    assert np.allclose(m, m.T) and np.all(np.diag(m) == 0)
    strict = npmi_matrix(counts, ids, min_freq=2)
    assert strict[0, 3] == 0.0 and strict[2, 3] == 0.0  # c(dates) = 1 < 2: a zero marginal gives 0
    assert strict[0, 2] == pytest.approx(-0.964502606, abs=1e-8)  # c(apple, cherry) = 1 < 2: joint zeroed


def test_sliding_windows_run_on_the_filtered_words_but_n_uses_raw_lengths() -> None:
    words = "aa bb cc dd ee ff gg hh ii jj kk ll"  # 12 words: windows [aa..jj] [bb..kk] [cc..ll]
    counts = count_corpus([words, "mm x y z nn"], "slide")  # single letters are out of the vocabulary
    ix = counts.index()
    assert "x" not in ix
    assert counts.n_windows == 3 + 1  # raw lengths 12 and 5
    pick = np.array([ix[w] for w in ("aa", "cc", "jj", "kk", "mm", "nn")])
    c = pair_count_matrix(counts, pick)
    assert counts.word_counts[pick].tolist() == [1, 3, 3, 2, 1, 1]
    assert c[0, 2] == 1 and c[0, 3] == 0 and c[1, 2] == 3 and c[1, 3] == 2
    assert c[4, 5] == 1  # "mm nn" after filtering: one window


def test_counts_are_cached_and_folders_are_validated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAYERSCOPE_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ValueError, match="does not exist"):
        folder_documents(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no .txt"):
        folder_documents(tmp_path / "empty")
    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "a.txt").write_text("alpha beta gamma\n\nbeta gamma delta " * 100)
    with pytest.raises(ValueError, match="fewer than 1,000 words"):
        folder_documents(folder)
    (folder / "b.txt").write_text("gamma delta epsilon " * 200)
    first = corpus_counts(str(folder), vocab_size=100)
    stored = list((tmp_path / "cache" / "topics").glob("*.npz"))
    assert len(stored) == 1 and first.key == stored[0].stem
    from core.analyses.topics import corpus as topics_corpus

    topics_corpus._memory.clear()
    again = corpus_counts(str(folder), vocab_size=100)
    assert again is not first and again.key == first.key
    # exact: a stored result vs the result it stored (integer codes and words)
    assert np.array_equal(again.pair_codes, first.pair_codes) and np.array_equal(again.vocab, first.vocab)
    with pytest.raises(ValueError, match="limit"):
        folder_documents(folder, max_bytes=10)


# -- star heuristic -----------------------------------------------------------------------------------
def _planted(n: int, groups: list[list[int]], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w = rng.uniform(-0.3, 0.12, (n, n))
    for g in groups:
        w[np.ix_(g, g)] = rng.uniform(0.2, 0.5, (len(g), len(g)))
    w = (w + w.T) / 2
    np.fill_diagonal(w, 1.0)  # the diagonal must never count as an edge
    return w


@pytest.mark.parametrize("seed", range(6))
def test_star_sets_are_disjoint_and_within_the_size_limits(seed: int) -> None:
    rng = np.random.default_rng(seed)
    w = _planted(120, [list(range(0, 30)), list(range(40, 52)), list(range(60, 75))], seed)
    w = np.where(rng.random(w.shape) < 0.1, 0.15, w)
    w = np.triu(w, 1) + np.triu(w, 1).T
    for limits in [(10, 24), (5, 12), (10, 32)]:
        sets = star_heuristic(w, (0.1, 1.0), limits)
        members = [m for s in sets for m in s.members]
        assert len(members) == len(set(members))
        assert all(limits[0] <= len(s.members) <= limits[1] for s in sets)
        assert all(s.members[-1] == s.centre for s in sets)
        assert all(w[s.centre, m] >= 0.1 for s in sets for m in s.members[:-1])


def test_star_heuristic_finds_planted_groups_and_caps_at_the_heaviest() -> None:
    groups = [list(range(0, 30)), list(range(40, 52))]
    w = _planted(80, groups, 11)
    sets = star_heuristic(w, (0.1, 1.0), (10, 24))
    assert len(sets) >= 2
    first = next(s for s in sets if s.centre in groups[0])
    assert len(first.members) == 24 and set(first.members) <= set(groups[0])  # capped at kappa_u
    others = [m for m in groups[0] if m not in first.members]
    kept = [m for m in first.members if m != first.centre]
    assert min(w[first.centre, kept]) >= max(w[first.centre, others])  # the kappa_u - 1 heaviest
    assert any(set(s.members) == set(groups[1]) for s in sets)
    assert star_heuristic(w, (0.6, 1.0), (10, 24)) == []


# -- modes --------------------------------------------------------------------------------------------
def _model_forward_with_input(session, start: int, x: torch.Tensor, stop_after: int | None = None) -> torch.Tensor:
    """[d_model] x placed as the residual entering block ``start`` of a 1-token forward pass -> [vocab] logits.

    With ``stop_after`` the residual after that block is read by hook and sent through the final norm."""
    adapter = session.adapter
    seen = {}

    def replace(_module, args, kwargs):
        if args:
            return (x[None, None].to(args[0].dtype),) + tuple(args[1:]), kwargs
        return args, {**kwargs, "hidden_states": x[None, None].to(kwargs["hidden_states"].dtype)}

    handles = [adapter.blocks[start].register_forward_pre_hook(replace, with_kwargs=True)]
    if stop_after is not None:
        def keep(_module, _inputs, output) -> None:  # must return None: a value would replace the output
            seen["h"] = output[0] if isinstance(output, tuple) else output

        handles.append(adapter.blocks[stop_after].register_forward_hook(keep))
    try:
        with torch.no_grad():
            logits = session.model(torch.tensor([[1]])).logits[0, -1]
            if stop_after is not None:
                logits = adapter.unembed(adapter.final_norm(seen["h"][0, -1]))
    finally:
        for h in handles:
            h.remove()
    return logits.float()


def test_hi_i_is_the_unembedded_output_direction_with_bias(make_session) -> None:
    session = make_session("gpt2", seed=1)  # a fresh model: its zero-initialised bias is set here
    block = session.model.transformer.h[1]
    with torch.no_grad():
        block.mlp.c_proj.bias.copy_(torch.randn(block.mlp.c_proj.bias.shape,
                                                generator=torch.Generator().manual_seed(0)))
    n = 7
    x = block.mlp.c_proj.weight[n] + block.mlp.c_proj.bias  # Conv1D: [d_mlp, d_model]
    expected = session.model.lm_head(session.model.transformer.ln_f(x))
    got = vocab_logits(session, "hi-i", 1, torch.tensor([n]))[0]
    assert torch.allclose(got, expected, atol=1e-5)
    assert not torch.allclose(got, session.model.lm_head(session.model.transformer.ln_f(x - block.mlp.c_proj.bias)),
                              atol=1e-3)


def test_hi_i_on_llama_uses_the_down_projection_column(make_session) -> None:
    session = make_session("llama")
    n = 5
    x = session.model.model.layers[0].mlp.down_proj.weight[:, n]
    expected = session.model.lm_head(session.model.model.norm(x))
    assert torch.allclose(vocab_logits(session, "hi-i", 0, torch.tensor([n]))[0], expected, atol=1e-5)


@pytest.mark.parametrize("arch", ["gpt2", "llama", "gpt_neox", "gptj", "opt"])
def test_complete_modes_match_the_models_own_forward(make_session, arch: str) -> None:
    session = make_session(arch)
    adapter = session.adapter
    units = torch.tensor([3, 11])
    hi = vocab_logits(session, "hi-c", 0, units)
    lo = vocab_logits(session, "lo-c", 1, units)
    lo_i = vocab_logits(session, "lo-i", 1, units)
    for i, unit in enumerate(units.tolist()):
        out = adapter.neuron_out_weight(0)[unit]
        bias = getattr(adapter.neurons(0), "bias", None)
        x = out + bias if bias is not None else out
        assert torch.allclose(hi[i], _model_forward_with_input(session, 1, x), atol=1e-4), arch
        e = torch.zeros(adapter.d_model)
        e[unit] = 1.0
        assert torch.allclose(lo[i], _model_forward_with_input(session, 1, e), atol=1e-4), arch
        assert torch.allclose(lo_i[i], _model_forward_with_input(session, 1, e, stop_after=1), atol=1e-4), arch
    last = adapter.n_layers - 1
    assert torch.allclose(vocab_logits(session, "hi-c", last, units), vocab_logits(session, "hi-i", last, units))


# -- pools --------------------------------------------------------------------------------------------
def _toy_map() -> WordMap:
    n_vocab = 12
    token_word = np.full(n_vocab, -1)
    token_word[[1, 9]] = 0  # " paris" and " Paris" both read as word 0 (single-token rule)
    token_word[6] = 3
    word_tokens = np.array([[1, 12], [2, 3], [4, 5], [6, 12], [13, 12]])  # pad 12 = n_vocab, 13 = never
    return WordMap(token_word, word_tokens, n_vocab, "toy", 0.4)


def test_multi_token_words_enter_when_all_their_tokens_are_in() -> None:
    wmap = _toy_map()
    ranked = np.array([9, 3, 2, 6, 4, 0, 7])  # best first
    ranks = wmap.word_ranks(ranked)
    assert ranks[0] == 1  # " Paris" (rank 1) maps to "paris" even though " paris" is not in the cut
    assert ranks[1] == 3  # tokens 2 (rank 3) and 3 (rank 2): the word enters at the later one
    assert math.isinf(ranks[2])  # token 5 is not in the cut
    assert ranks[3] == 4
    assert math.isinf(ranks[4])  # a word without usable tokens never enters
    ids, entry, cut = pool_from(wmap, ranked, tau=10, step=1)
    assert ids.tolist() == [0, 1, 3] and entry.tolist() == [1, 3, 4] and cut == 7
    ids, entry, cut = pool_from(wmap, ranked, tau=2, step=1)  # shrink the cut until <= tau words
    assert ids.tolist() == [0, 1] and cut == 3


def test_random_baseline_is_a_seeded_permutation() -> None:
    top, bottom = random_extremes(100, 30, seed=4)
    again, _ = random_extremes(100, 30, seed=4)
    assert np.array_equal(top, again) and len(set(top) | set(bottom)) == 60
    assert not np.array_equal(top, random_extremes(100, 30, seed=5)[0])


# -- tasks on a tiny model ---------------------------------------------------------------------------
_SENTENCES = ["The capital of France is Paris and the capital of Italy is Rome.",
              "A transformer reads tokens and mixes them with attention in the residual stream.",
              "The quick brown fox jumps over the lazy dog near the city.",
              "Layers refine the prediction of the next token after attention."]


def test_scan_and_comparison_on_a_tiny_model(make_session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from core.analyses.topics import cached_runs as topics_tasks

    monkeypatch.setenv("LAYERSCOPE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(topics_tasks, "cached", lambda _ns, compute, **_parts: compute())  # always compute
    folder = tmp_path / "corpus"
    folder.mkdir()
    rng = np.random.default_rng(0)
    (folder / "a.txt").write_text("\n\n".join(" ".join(rng.permutation(_SENTENCES)) for _ in range(60)))
    session = make_session("gpt2")
    params = TopicParams(tau=60, min_freq=1, corpus=str(folder), thresholds=(0.0, 1.0), size_limits=(3, 8), k=3)
    ref = topics_tasks.prepare(session, params)
    assert ref.counts.n_docs == 60 and "paris" in ref.counts.index()
    scan = topics_tasks.scan_layer(session, ref, "hi-c", 1, params)  # block 1 (1-based) = block index 0
    assert sorted(scan.unit.tolist()) == list(range(session.adapter.d_mlp))
    assert (scan.n_sets == scan.pos_sets + scan.neg_sets).all()
    assert scan.n_sets.is_monotonic_decreasing and scan.pos_pool.between(0, params.tau).all()
    frames = topics_tasks.compare_random(session, ref, "lo-i", 2, 4, 0, params)  # block 2 = block index 1
    rows, tests = frames["rows"], frames["tests"].set_index("metric")
    assert len(rows) == 4 * 2 * 2 and set(rows.source) == {"real", "random"}
    assert tests.loc["word sets per pool", "n_real"] == 8 and tests.loc["word sets per pool", "n_random"] == 8
    assert len(frames["topics"]) == rows.n_sets.sum()
    with pytest.raises(ValueError, match="sample size"):
        topics_tasks.compare_random(session, ref, "lo-i", 2, 10_000, 0, params)
    with pytest.raises(ValueError, match="embeddings"):  # blocks are 1-based: 0 names no block
        topics_tasks.scan_layer(session, ref, "hi-c", 0, params)
    with pytest.raises(ValueError, match="Block 4 does not exist.*blocks 1..3"):
        topics_tasks.unit_result(session, ref, "hi-c", 4, 0, params)


def test_mann_whitney_separates_shifted_samples() -> None:
    import pandas as pd

    from core.analyses.topics.cached_runs import mann_whitney

    rows = pd.DataFrame({"source": ["real"] * 20 + ["random"] * 20, "n_sets": list(range(5, 25)) + [0] * 20,
                         "pool_size": [300] * 40})
    topics = pd.DataFrame({"source": ["real"] * 10 + ["random"] * 10,
                           "coherence": np.r_[np.linspace(0.1, 0.3, 10), np.linspace(-0.2, 0.05, 10)]})
    tests = mann_whitney(rows, topics).set_index("metric")
    assert tests.loc["word sets per pool", "p"] < 1e-6 and tests.loc["topic coherence", "p"] < 1e-3
    assert tests.loc["word sets per pool", "U"] == 400  # every real value above every random one
    assert np.isnan(tests.loc["pool size", "p"])  # all equal: no test
