"""Attention -> MLP (Neo et al.): the linear decomposition adds up exactly, congruence and its filter,
trimming keeps > 0.8, the active rules on constructed attributions, ablation, the explainer, the CLI, the
1-based block numbering shared with Neuron topics, and the whole pipeline on the bundled model.

Frames and the public functions number blocks from 1 (block l writes layer l); functions that index tensors
(neuron_input, decompose, congruence_top, neuron_acts, ...) take 0-based block indices."""

from __future__ import annotations

import copy
import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from numerics import assert_top1_within_ties

from core.analyses.attention_mlp import neurons as amlp
from core.analyses.attention_mlp import prompts as amlp_prompts
from core.analyses.attention_mlp.heads import (
    active_sigma,
    active_top_k,
    context_dependent,
    context_share,
    decompose,
    ks_tests,
    neuron_input,
)
from core.analyses.attention_mlp.passes import ablated_token_probs, bos_prefix, content_ids, neuron_acts, neuron_preacts
from core.analyses.attention_mlp.pipeline import HeadParams, compute_heads
from core.analyses.topics.neuron import TopicParams
from core.analyses.topics.vocab import vocab_logits
from core.model.loading import ModelSpec
from core.model.session import ModelSession

PROMPT = "The capital of Italy is Rome, and the capital of Spain is Madrid."
DECOMPOSED_ARCHS = ("gpt2", "llama", "qwen2", "gpt_neox", "gptj", "opt")


@pytest.mark.parametrize("arch", DECOMPOSED_ARCHS)
def test_head_attributions_plus_other_terms_equal_the_real_preactivation(make_session, arch) -> None:
    session = make_session(arch)
    ids = content_ids(session, PROMPT)
    for layer in range(session.adapter.n_layers):
        actual = neuron_preacts(session, ids, layer)[-1]  # [d_mlp] from the real forward pass
        for neuron in (0, 7, 41):
            target = neuron_input(session, layer, neuron)
            dec = decompose(session, ids, target)
            parts = float(dec.heads.sum() + dec.own_heads.sum()) + sum(dec.terms.values())
            assert parts == pytest.approx(dec.dot, rel=1e-4, abs=1e-4)
            assert dec.preact == pytest.approx(float(actual[neuron]), rel=1e-4, abs=1e-4)
            assert dec.heads.shape == (layer, session.adapter.n_heads)


def test_gpt2_attention_bias_term_is_the_output_bias_and_llama_has_none(make_session) -> None:
    """The per-head writes carry everything but b_O: the remainder is exactly b_O . w per earlier block."""
    gpt2, llama = make_session("gpt2"), make_session("llama")
    ids = content_ids(gpt2, PROMPT)
    target = neuron_input(gpt2, 2, 3)
    expected = sum(float(gpt2.adapter.attn_out(l).bias.float() @ target.direction) for l in range(2))
    assert decompose(gpt2, ids, target).terms["attn_bias"] == pytest.approx(expected, abs=1e-4)
    assert abs(decompose(llama, ids, neuron_input(llama, 2, 3)).terms["attn_bias"]) < 1e-4


def test_gpt2_activation_is_gelu_of_the_decomposed_preactivation(make_session) -> None:
    session = make_session("gpt2")
    ids = content_ids(session, PROMPT)
    dec = decompose(session, ids, neuron_input(session, 1, 5))
    gelu = session.model.transformer.h[1].mlp.act
    assert dec.activation == pytest.approx(float(gelu(torch.tensor(dec.preact))), rel=1e-4, abs=1e-5)


def test_layernorm_input_direction_is_centred_and_rmsnorm_is_not(make_session) -> None:
    gpt2, llama = make_session("gpt2"), make_session("llama")
    assert abs(float(neuron_input(gpt2, 1, 2).direction.mean())) < 1e-6
    w = llama.adapter.mlp_in_weight(1)[:, 2].float() * llama.adapter.mlp_norm(1).weight.float()
    assert torch.allclose(neuron_input(llama, 1, 2).direction, w)


def test_processed_weights_are_centred_as_the_norm_demands(make_session) -> None:
    for arch, centres in (("gpt2", True), ("llama", False)):
        session = make_session(arch)
        w_u = amlp.processed_unembedding(session)  # [d_model, vocab]
        assert torch.allclose(w_u.mean(dim=1), torch.zeros(w_u.shape[0]), atol=1e-5)
        w_out = amlp.processed_out_directions(session, 0)
        raw = session.adapter.neuron_out_weight(0).float()
        assert torch.allclose(w_out, raw - raw.mean(dim=1, keepdim=True) if centres else raw, atol=1e-6)


def test_unembedding_folds_the_final_norm_gain(make_session) -> None:
    session = make_session("llama")
    gain = session.adapter.final_norm_module.weight.float()
    raw = session.adapter.unembed_module.weight.float().T  # [d_model, vocab]
    expected = gain[:, None] * raw
    assert torch.allclose(amlp.processed_unembedding(session), expected - expected.mean(dim=1, keepdim=True),
                          atol=1e-6)


def test_congruence_blocks_equal_the_full_product(make_session) -> None:
    session = make_session("gpt2")
    full = amlp.processed_out_directions(session, 1) @ amlp.processed_unembedding(session)  # [d_mlp, vocab]
    values, tokens = amlp.congruence_top(session, 1)
    # different computations (blocks of neurons vs one full product): values within 1e-6 (they are ~0.1) and
    # the argmax tokens up to near-ties of the full product (numerics.logit_tol)
    torch.testing.assert_close(values, full.max(dim=1).values, rtol=0, atol=1e-6)
    assert_top1_within_ties(tokens, full)


def test_space_filter() -> None:
    reject = frozenset({" banned"})
    assert amlp.passes_filter("Ġthe", " the", "Ġ", reject)
    assert not amlp.passes_filter("Ġa", " a", "Ġ", reject)  # one character after the marker
    assert not amlp.passes_filter("the", "the", "Ġ", reject)
    assert not amlp.passes_filter("Ġbanned", " banned", "Ġ", reject)
    assert amlp.passes_filter("▁of", " of", "▁", reject)


def test_next_token_neurons_are_the_most_congruent_passing_the_filter(make_session) -> None:
    session = make_session("gpt2")
    neurons = amlp.next_token_neurons(session, [2, 3], per_layer=3)  # blocks 2 and 3 = block indices 1 and 2
    assert amlp.space_marker(session) == "Ġ"
    values, tokens = amlp.congruence_top(session, 2)  # block index 2 = block 3
    raw = session.tokenizer.convert_ids_to_tokens(list(range(len(session.vocab_strings()))))
    passing = [n for n in torch.argsort(values, descending=True).tolist()
               if raw[int(tokens[n])].startswith("Ġ") and len(raw[int(tokens[n])]) >= 3][:3]
    # exact: same computation (next_token_neurons sorts the same congruence_top call the same way)
    assert neurons[neurons.block == 3].neuron.tolist() == passing
    assert (neurons.groupby("block").congruence.diff().dropna() <= 0).all()
    assert neurons.token.str.startswith(" ").all()


def test_default_blocks_scale_the_papers_choice() -> None:
    # 1-based blocks: the paper's 0-based GPT-2 small layers 9-11 are blocks 10-12 (each value shifted by 1)
    assert amlp.default_blocks(12) == [10, 11, 12]
    assert amlp.default_blocks(30) == [27, 28, 29, 30]
    assert amlp.default_blocks(2) == [1, 2]


def test_random_control_and_bad_blocks(make_session) -> None:
    session = make_session("llama")
    control = amlp.random_neurons(session, [1, 3], per_layer=4, seed=3)
    assert len(control) == 8 and set(control.kind) == {"random"} and set(control.block) == {1, 3}
    assert control.equals(amlp.random_neurons(session, [1, 3], per_layer=4, seed=3))
    with pytest.raises(ValueError, match="outside"):
        amlp.next_token_neurons(session, [7], per_layer=2)
    with pytest.raises(ValueError, match="1..3 .*embeddings"):  # block 0 is the embeddings, not a block
        amlp.next_token_neurons(session, [0], per_layer=2)
    with pytest.raises(ValueError, match="outside"):  # the last block is 3 (= block index 2)
        amlp.random_neurons(session, [4], per_layer=2)


def test_a_neuron_has_the_same_block_on_both_analyses(make_session, monkeypatch) -> None:
    """The Attention -> MLP frame's ``block`` for a neuron is the block Neuron topics takes for it (the CLI's
    --layer, the page's Block): there, neuron n's Hi-I beta = W_U Norm_f(W_out[n]) has the neuron's congruence
    token on top (both read W_out[n] through the final norm's gain and W_U; RMSNorm's scale is positive)."""
    from core.analyses.topics import cached_runs

    session = make_session("llama")
    neurons = amlp.random_neurons(session, [1, 2, 3], per_layer=3, seed=0)
    monkeypatch.setattr(cached_runs, "cached", lambda _ns, compute, **_parts: compute())  # always compute
    monkeypatch.setattr(cached_runs, "neuron_topics",  # the beta the analysis would rank, for this block index
                        lambda s, _counts, _wmap, mode, b, unit, _params, _seed: vocab_logits(s, mode, b,
                                                                                           torch.tensor([unit]))[0])
    ref = SimpleNamespace(counts=SimpleNamespace(key="unused"), wmap=None)

    def beta(block: int, neuron: int) -> torch.Tensor:  # [vocab] through the topics analysis's 1-based entry
        return cached_runs.unit_result(session, ref, "hi-i", block, neuron, TopicParams())

    shifted = 0
    for row in neurons.itertuples():
        # different computations (congruence vs the norm-and-unembed pass): the top token up to near-ties
        assert_top1_within_ties(int(row.token_id), beta(int(row.block), int(row.neuron)))
        shifted += int(beta(int(row.block) % 3 + 1, int(row.neuron)).argmax()) != int(row.token_id)
    assert shifted > 0  # another block's neuron n has another top token: the check tells the blocks apart


def _fake_acts(values_by_start: dict[int, float], n: int):
    def fake(_session, ids, layers):
        out = torch.zeros(len(ids), 2)
        out[-1, 1] = values_by_start.get(n - len(ids), 0.0)
        return {layers[0]: out}
    return fake


def test_binary_trim_on_a_monotone_activation_keeps_more_than_0_8(monkeypatch) -> None:
    n = 20  # activation falls as the suffix shortens: start s keeps 10 - s/2; threshold 8 -> start 3
    monkeypatch.setattr(amlp_prompts, "neuron_acts", _fake_acts({s: 10 - s / 2 for s in range(n)}, n))
    trim = amlp_prompts.trim_prompt(None, list(range(n)), 0, 1)
    assert (trim.start, trim.method) == (3, "binary") and trim.activation > 0.8 * trim.original


def test_non_monotone_activation_falls_back_to_the_exact_scan(monkeypatch) -> None:
    n = 16  # long suffixes (start <= 3) and the shortest ones (start >= 12) keep the activation
    values = {s: (10.0 if s <= 3 or s >= 12 else 1.0) for s in range(n)}
    monkeypatch.setattr(amlp_prompts, "neuron_acts", _fake_acts(values, n))
    trim = amlp_prompts.trim_prompt(None, list(range(n)), 0, 1)
    assert (trim.start, trim.method) == (15, "linear")
    assert amlp_prompts.trim_prompt(None, list(range(n)), 0, 1, method="linear").start == 15


def test_the_length_cap_keeps_the_search_inside_the_last_max_tokens(monkeypatch) -> None:
    """RESEARCH.md §5a.3 drops prompts longer than 100 tokens after trimming, so the search never needs a longer
    suffix: the same start as the uncapped search for a kept prompt, "too long" after one pass for a dropped one."""
    n = 400  # monotone: start s keeps 10 - s / 50; threshold 8 -> the shortest kept suffix starts at 99 (301 tokens)
    values = {s: 10 - s / 50 for s in range(n)}
    monkeypatch.setattr(amlp_prompts, "neuron_acts", _fake_acts(values, n))
    uncapped = amlp_prompts.trim_prompt(None, list(range(n)), 0, 1)
    assert uncapped.start == 99 and n - uncapped.start > 100
    dropped = amlp_prompts.trim_prompt(None, list(range(n)), 0, 1, max_tokens=100, original=10.0)
    # one 100-token pass, then the shorter probes that check the monotone reading
    assert (dropped.start, dropped.method, dropped.passes) == (0, "too long", 1 + amlp_prompts.VERIFY_PROBES)
    long_n, tokens = 1024, []  # a paper-sized window whose shortest kept suffix has 80 tokens
    fake = _fake_acts({s: 10.0 if s <= long_n - 80 else 1.0 for s in range(long_n)}, long_n)
    monkeypatch.setattr(amlp_prompts, "neuron_acts",
                        lambda session, ids, layers: tokens.append(len(ids)) or fake(session, ids, layers))
    assert amlp_prompts.trim_prompt(None, list(range(long_n)), 0, 1).start == long_n - 80
    uncapped_tokens, tokens[:] = sum(tokens), []
    kept = amlp_prompts.trim_prompt(None, list(range(long_n)), 0, 1, max_tokens=100, original=10.0)
    assert (kept.start, kept.method) == (long_n - 80, "binary")
    assert max(tokens) == 100 and sum(tokens) < uncapped_tokens / 3  # no pass longer than the cap
    monkeypatch.setattr(amlp_prompts, "neuron_acts", _fake_acts(values, n))
    for method in ("binary", "linear"):
        without = amlp_prompts.trim_prompt(None, list(range(n)), 0, 1, method=method)
        with_cap = amlp_prompts.trim_prompt(None, list(range(n)), 0, 1, method=method, max_tokens=301)
        assert with_cap.start == without.start == 99  # exactly at the cap: still kept, same suffix


def test_the_capped_scan_is_exact_on_a_non_monotone_activation(monkeypatch) -> None:
    n = 60  # passes at starts <= 5, 30..34 and 59: the shortest kept suffix is the last token alone
    values = {s: (10.0 if s <= 5 or 30 <= s <= 34 or s >= 59 else 1.0) for s in range(n)}
    monkeypatch.setattr(amlp_prompts, "neuron_acts", _fake_acts(values, n))
    for method in ("binary", "linear"):
        assert amlp_prompts.trim_prompt(None, list(range(n)), 0, 1, method=method, max_tokens=20).start == 59
    values = {s: (10.0 if s <= 5 or 30 <= s <= 34 else 1.0) for s in range(n)}  # the shortest starts at 34
    monkeypatch.setattr(amlp_prompts, "neuron_acts", _fake_acts(values, n))
    assert amlp_prompts.trim_prompt(None, list(range(n)), 0, 1, method="linear").start == 34
    assert amlp_prompts.trim_prompt(None, list(range(n)), 0, 1, method="linear", max_tokens=26).start == 34
    assert amlp_prompts.trim_prompt(None, list(range(n)), 0, 1, method="linear", max_tokens=25).method == "too long"


def test_a_given_original_saves_the_whole_prompt_pass(monkeypatch) -> None:
    n = 20
    calls: list[int] = []
    fake = _fake_acts({s: 10 - s / 2 for s in range(n)}, n)

    def counting(session, ids, layers):
        calls.append(len(ids))
        return fake(session, ids, layers)

    monkeypatch.setattr(amlp_prompts, "neuron_acts", counting)
    trim = amlp_prompts.trim_prompt(None, list(range(n)), 0, 1, original=10.0)
    assert trim.start == 3 and trim.original == 10.0 and n not in calls  # the whole prompt never ran
    with pytest.raises(ValueError, match="length cap"):
        amlp_prompts.trim_prompt(None, list(range(n)), 0, 1, max_tokens=0)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
@pytest.mark.parametrize("method", ["binary", "linear"])
def test_batched_trimming_finds_the_suffixes_one_at_a_time_finds(make_session, arch: str, method: str) -> None:
    session = make_session(arch)
    ids = content_ids(session, (PROMPT + " The quick brown fox jumps over the lazy dog, and the dog sleeps.") * 3)
    block, neuron = 2, 3
    acts = neuron_acts(session, ids, [block])[block][:, neuron]
    acts[:8] = float("-inf")  # prompts of at least 9 tokens
    ends = [int(e) for e in torch.argsort(acts, descending=True)[:8]]  # the most active positions: ends of prompts
    prompts = [(ids[:end + 1], float(acts[end])) for end in ends]
    batched = amlp_prompts.trim_prompts(session, prompts, block, neuron, method=method, max_tokens=60)
    assert any(t.method in ("binary", "linear") and t.start > 0 for t in batched)  # real trimming happened
    compared = 0
    for (prompt, original), got in zip(prompts, batched):
        # a padded batch rounds differently from a single sequence: a suffix whose activation lies within
        # rounding of the threshold may decide either way (a near-tie), so such prompts are not compared
        suffixes = [float(neuron_acts(session, prompt[s:], [block])[block][-1, neuron]) for s in range(len(prompt))]
        if any(abs(a - 0.8 * original) < 1e-4 * abs(original) + 1e-5 for a in suffixes):
            continue
        alone = amlp_prompts.trim_prompt(session, prompt, block, neuron, method=method, max_tokens=60,
                                         original=original)
        assert (got.start, got.method) == (alone.start, alone.method)
        assert got.activation == pytest.approx(alone.activation, rel=1e-4, abs=1e-5)
        compared += 1
    assert compared >= len(prompts) - 1  # near-ties are rare: the comparison really happens


def test_trimmed_prompts_keep_more_than_0_8_and_are_shortest(make_session) -> None:
    session = make_session("llama")
    neurons = amlp.random_neurons(session, [3], per_layer=3, seed=1)  # block 3 = block index 2 of neuron_acts
    texts = ["The quick brown fox jumps over the lazy dog. " * 3, PROMPT, "Layers after layers refine the "
             "prediction of the next token, and a transformer mixes them with attention."]
    params = amlp_prompts.ScanParams(window=24, top=4, trim="linear")
    prompts = amlp_prompts.compute_prompts(session, neurons, texts, params)
    assert not prompts.empty
    for row in prompts.itertuples():
        again = float(neuron_acts(session, list(row.ids), [2])[2][-1, row.neuron])
        assert again == pytest.approx(row.trimmed_activation, rel=1e-4, abs=1e-5)
        assert row.trimmed_activation > 0.8 * row.activation and row.n_tokens <= 100
        if len(row.ids) > 1:  # one token shorter no longer keeps 0.8 (linear = exact shortest)
            # the trim probed this suffix in a padded batch and took row.activation from the batched scan: a
            # single pass rounds differently, so a suffix within rounding of the threshold counts as a tie
            shorter = float(neuron_acts(session, list(row.ids)[1:], [2])[2][-1, row.neuron])
            assert shorter <= 0.8 * row.activation + 1e-4 * abs(row.activation) + 1e-5
    assert set(prompts.block) == {3}
    assert (prompts.groupby(["block", "neuron"]).activation.diff().dropna() <= 1e-6).all()


def test_bos_is_prepended_when_the_tokenizer_adds_one(tiny_tokenizer, tiny_model_factory) -> None:
    from tokenizers.processors import TemplateProcessing

    tok = copy.deepcopy(tiny_tokenizer)
    tok.backend_tokenizer.post_processor = TemplateProcessing(single="<|endoftext|> $A",
                                                              special_tokens=[("<|endoftext|>", 0)])
    session = ModelSession(tiny_model_factory("llama"), tok, ModelSpec(source="tiny-bos"))
    assert bos_prefix(session) == [0]
    ids = content_ids(session, PROMPT)
    assert ids[0] != 0
    acts = neuron_acts(session, ids, [1])[1]  # [pos, d_mlp] at content positions
    reference = session.trace(torch.tensor([0] + ids), capture=("neurons",)).neurons[1, 1:]
    assert acts.shape[0] == len(ids) and torch.allclose(acts, reference, atol=1e-5)
    windows = [ids]
    neurons = pd.DataFrame({"block": [2], "neuron": [4], "token_id": [5], "token": ["x"]})  # block 2 = index 1
    top = amlp_prompts.scan_top_windows(session, windows, neurons, top=1)
    assert top.block.tolist() == [2]
    # different computations (neuron_acts' early-stopped pass vs a trace, compared with atol 1e-5 above): the
    # max-activating position up to near-ties of the reference activations (numerics.logit_tol)
    assert_top1_within_ties(int(top.position.iloc[0]), reference[:, 4])


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    from core import cache

    monkeypatch.setenv("LAYERSCOPE_CACHE", str(tmp_path))
    cache.results_cache.cache_clear()
    yield tmp_path
    cache.results_cache.cache_clear()


def test_cached_prompts_equal_the_uncached_and_are_not_recomputed(make_session, fresh_cache, monkeypatch) -> None:
    from core.analyses.attention_mlp import pipeline as run

    session = make_session("llama")
    neurons = amlp.random_neurons(session, [2, 3], per_layer=2, seed=4)
    texts, params = [PROMPT, "The quick brown fox jumps over the lazy dog."], amlp_prompts.ScanParams(window=12, top=3)
    direct = amlp_prompts.compute_prompts(session, neurons, texts, params)
    seen = []
    cached = run.max_activating_prompts(session, neurons, texts, params, lambda f, m: seen.append(f))
    # exact: same computation (the same scan and the same per-prompt trims, only grouped per neuron)
    pd.testing.assert_frame_equal(cached.reset_index(drop=True), direct.reset_index(drop=True), check_exact=True)
    assert seen and max(seen) <= 1.0
    monkeypatch.setattr(run, "trimmed_rows", lambda *a, **k: pytest.fail("recomputed a cached trim"))
    monkeypatch.setattr(run, "scan_top_windows", lambda *a, **k: pytest.fail("recomputed a cached scan"))
    # exact: a cached result vs the result it cached
    one = run.neuron_prompts(session, neurons, texts, params, int(neurons.block[0]), int(neurons.neuron[0]))
    assert one.equals(cached[(cached.block == neurons.block[0]) & (cached.neuron == neurons.neuron[0])]
                      .reset_index(drop=True))


def test_top3_rule_marks_the_three_largest() -> None:
    attr = np.array([[0.1, 5.0, 3.0, -1.0, 4.0], [1.0, 1.0, 1.0, 1.0, 2.0]])
    assert active_top_k(attr, 3).tolist() == [[False, True, True, False, True], [True, True, False, False, True]]


def test_two_sigma_rule_marks_outliers_only() -> None:
    attr = np.array([[0.0] * 9 + [10.0], [1.0] * 10, [0.0] * 8 + [5.0, 5.0]])
    active = active_sigma(attr)
    assert active[0].tolist() == [False] * 9 + [True]  # mean 1, std sqrt(10): threshold 7.32
    assert not active[1].any() and not active[2].any()


def test_context_dependent_band_is_25_to_75_percent() -> None:
    active = np.zeros((4, 5), dtype=bool)
    for head, count in enumerate([0, 1, 2, 3, 4]):
        active[:count, head] = True
    share, dependent = context_dependent(active)
    assert share.tolist() == [0, 0.25, 0.5, 0.75, 1.0]
    assert dependent.tolist() == [False, True, True, True, False]


def test_ks_on_separated_drops_and_the_context_share() -> None:
    ablation = pd.DataFrame({"drop": [0.5, 0.6, 0.7, 0.8, 0.0, 0.01, 0.02, -0.01],
                             "active_top3": [True] * 4 + [False] * 4, "active_sigma2": [True] + [False] * 7})
    ks = ks_tests(ablation).set_index("rule")
    assert ks.loc["top3", "ks_d"] == 1.0 and ks.loc["top3", "p_value"] < 0.05
    assert ks.loc["sigma2", "n_active"] == 1
    heads = pd.DataFrame({"block": [1, 1, 1, 1], "neuron": [0, 0, 1, 1], "context_top3": [True, False, False, False],
                          "context_sigma2": [False] * 4})
    share = context_share(heads).set_index("rule")
    assert share.loc["top3", "share"] == 0.5 and share.loc["sigma2", "with_context_heads"] == 0


def test_zeroing_a_query_heads_z_equals_removing_its_output_weights(make_session) -> None:
    """Grouped-query attention (4 query heads, 2 KV heads): the hook ablates exactly one query head."""
    session = make_session("llama")
    ids, token = content_ids(session, PROMPT), 17
    clean, ablated = ablated_token_probs(session, ids, token, [(1, 2), (2, 0)])
    for (layer, head), p in zip([(1, 2), (2, 0)], ablated):
        model = copy.deepcopy(session.model)
        d_head = session.adapter.d_head
        with torch.no_grad():
            model.model.layers[layer].self_attn.o_proj.weight[:, head * d_head:(head + 1) * d_head] = 0
            probs = torch.softmax(model(torch.tensor([ids])).logits[0, -1], -1)
        assert p == pytest.approx(float(probs[token]), rel=1e-4)
    plain = torch.softmax(session.model(torch.tensor([ids])).logits[0, -1].detach(), -1)
    assert clean == pytest.approx(float(plain[token]), rel=1e-4)


def test_heads_pipeline_tables_are_consistent(make_session) -> None:
    session = make_session("gpt2")
    rows = [{"block": 3, "neuron": 3, "token_id": 40, "token": "x", "prompt": k, "ids": content_ids(session, t)}
            for k, t in enumerate([PROMPT, "The quick brown fox", "Paris is a city in France;",
                                   "A transformer reads tokens", "The capital of France is Paris."])]
    results = compute_heads(session, pd.DataFrame(rows), HeadParams())
    attr = results["attributions"]
    assert len(attr) == 5 * 2 * session.adapter.n_heads  # the heads of blocks 1 and 2, before block 3
    assert set(attr.head_block) == {1, 2} and set(attr.block) == {3}
    assert attr.head_label.tolist()[:2] == ["B1H0", "B1H1"]
    assert (attr.groupby("prompt").active_top3.sum() == 3).all()
    dependent = results["heads"][results["heads"][["context_top3", "context_sigma2"]].any(axis=1)]
    assert set(results["ablation"].head_label) == set(dependent.head_label)
    assert len(results["ablation"]) == 5 * len(dependent)
    assert set(results["ks"].rule) == {"top3", "sigma2"}


def test_fake_explainer_is_scored_by_balanced_accuracy() -> None:
    from core.analyses.attention_mlp.explainer import Example, explain_and_score, parse_yes_no, score_labels

    examples = [Example(f"the river {k}", True) for k in range(6)] + [Example(f"a car {k}", False) for k in range(6)]
    seen = []

    def explainer(prompt: str) -> str:
        seen.append(prompt)
        if "Yes or No" not in prompt:
            return "Active when the context mentions a river."
        return "Yes." if "river" in prompt.split("Snippet:")[1] else "No"

    explanation, score, guesses = explain_and_score(explainer, " bank", "B3H1", examples)
    assert explanation.startswith("Active") and score is not None and score.balanced_accuracy == 1.0
    assert len(guesses) == 6 and "the river" in seen[0] and "a car" in seen[0]
    assert parse_yes_no(" **No**, because") is False and parse_yes_no("maybe") is None
    manual = score_labels([True, False, False, None], [True, True, False, False])  # TPR 1/2, TNR 1/2
    assert manual.balanced_accuracy == 0.5 and (manual.tp, manual.fn, manual.tn, manual.fp) == (1, 1, 1, 1)
    assert score_labels([True, True], [True, True]) is None
    from core.analyses.attention_mlp.explainer import score_statistics

    stats = score_statistics([0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.6, 1.0, float("nan")])
    assert stats["n"] == 8 and stats["mean"] == pytest.approx(0.575) and stats["skew"] > 0
    assert 0 < stats["skew_p"] < 0.5  # a right tail: the one-sided test leans to 'greater'


def test_chat_endpoint_sends_one_request_caches_it_and_never_stores_the_key(tmp_path, monkeypatch) -> None:
    from core.analyses.attention_mlp import explainer as explain

    monkeypatch.setenv("LAYERSCOPE_CACHE", str(tmp_path))
    calls = []

    class Reply:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read(self) -> bytes:
            return json.dumps({"choices": [{"message": {"content": "Yes"}}]}).encode()

    def fake_urlopen(request, timeout):
        calls.append((request.full_url, request.get_header("Authorization"), json.loads(request.data), timeout))
        return Reply()

    monkeypatch.setattr(explain.urllib.request, "urlopen", fake_urlopen)
    endpoint = explain.ChatEndpoint("http://localhost:9/v1/", "tiny", api_key="sk-secret", timeout=5)
    assert endpoint("question") == "Yes" and endpoint("question") == "Yes"
    assert len(calls) == 1 and calls[0][0] == "http://localhost:9/v1/chat/completions"
    assert calls[0][1] == "Bearer sk-secret" and calls[0][2]["model"] == "tiny" and calls[0][3] == 5
    stored = list((tmp_path / "explain").glob("*.json"))
    assert len(stored) == 1 and "sk-secret" not in stored[0].read_text() and "sk-secret" not in repr(endpoint)
    with pytest.raises(ValueError, match="http"):
        explain.ChatEndpoint("localhost:9", "tiny")


def test_cli_rejects_an_unknown_table_with_one_line(capsys) -> None:
    from core.cli.main import main

    assert main(["attention-mlp", "--table", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: Unknown table") and err.count("\n") == 1
