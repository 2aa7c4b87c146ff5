"""The Lens page's tools (issue 16) in AppTest, each opened from its query string: patching and the patch lens,
contributions, attention, generation, chat wrapping. Each view runs clean, its text passes the scanner, and what it
draws agrees with the core API's invariants."""

from __future__ import annotations

import pytest
from test_app import DEFAULT_PROMPT, LENS, assert_clean, charts, errors, run_page
from text_scan import assert_clean_text

CLEAN, CORRUPT = "The Eiffel Tower is in the city of", "The Colosseum is in the city of"  # 9 tokens each



def test_the_views_are_offered_and_the_lens_is_the_default() -> None:
    at = run_page(LENS)
    assert_clean(at)
    assert [str(o) for o in at.button_group[0].options] == ["Lens", "Patching", "Contributions", "Attention",
                                                            "Generate"]
    assert at.query_params.get("view") == "lens"


def test_patching_from_the_url_restores_the_clean_answer_at_the_last_layer() -> None:
    at = run_page(LENS, view="patch", prompt=CLEAN, patch_prompt_b=CORRUPT, patch_run="1",
                  patch_lens_run="1", patch_source="15,8", patch_target="15,8")
    assert_clean(at)
    assert_clean_text(at)
    grid = next(data for spec, data in charts(at) if "effect" in data.columns and "value" in data.columns)
    assert len(grid) == 31 * 9
    last = grid[(grid.layer == 30)]
    assert last[last.position == 8].effect.iloc[0] == pytest.approx(1.0, abs=1e-4)  # all of the clean answer
    assert last[last.position < 8].effect.abs().max() < 1e-4  # the logits read only the last position
    lens = next(data for spec, data in charts(at) if "in_cone" in data.columns)
    assert not (lens.changed & ~lens.in_cone).any()  # nothing outside the causal cone moves
    assert any("Copy" in e.label for e in at.expander)


def test_patching_prompts_of_different_lengths_get_a_message_before_any_work() -> None:
    at = run_page(LENS, view="patch", prompt=CLEAN, patch_prompt_b="Rome is", patch_run="1")
    assert not at.exception
    text = " ".join(errors(at) + [w.value for w in at.warning] + [i.value for i in at.info])
    assert "9" in text and "token" in text, text
    assert not any("effect" in data.columns for _, data in charts(at))


def test_contributions_sum_to_the_cells_logit() -> None:
    at = run_page(LENS, view="contrib", prompt=DEFAULT_PROMPT, cell="30,4")
    assert_clean(at)
    assert_clean_text(at)
    bars = charts(at)[0][1]
    heading = next(m.value for m in at.markdown if "read as" in m.value)
    logit = float(heading.split("logit ")[1].rstrip("*"))
    assert bars.dla.sum() == pytest.approx(logit, abs=2e-3)  # the parts (embeddings, blocks, constant) sum to it
    assert {"embed", "attn", "mlp", "const"} <= set(bars.kind)


def test_attention_rows_sum_to_one() -> None:
    at = run_page(LENS, view="attn", prompt=DEFAULT_PROMPT, cell="30,4", attn_layer="24")
    assert_clean(at)
    assert_clean_text(at)
    heat = next(data for _, data in charts(at) if "attention" in data.columns)
    sums = heat.groupby("head").attention.sum()
    assert len(sums) == 9 and sums.sub(1).abs().max() < 1e-4
    assert not any(s.label == "Layer" for s in at.selectbox)  # the view picks its block, not a layer


def test_generation_from_the_url_marks_the_continuation() -> None:
    at = run_page(LENS, view="gen", prompt=DEFAULT_PROMPT, gen_n="5", gen_go="1")
    assert_clean(at)
    assert_clean_text(at)
    grid = charts(at)[0][1]
    assert grid.position.max() >= 5  # prompt (5 tokens) + the continuation
    assert any("Paris" in str(c.value) for c in at.code) or any("Paris" in m.value for m in at.markdown)


def test_chat_wrapping_shows_the_exact_tokens() -> None:
    at = run_page(LENS, prompt=DEFAULT_PROMPT, chat="True")
    assert_clean(at)
    assert at.query_params.get("chat") == "True"
    assert not at.sidebar.dataframe  # the Tokens expander is closed: its table is not drawn
    at.session_state["x_tokens"] = True  # what opening it does
    at.run()
    assert_clean(at)
    captions = " ".join(c.value for c in at.sidebar.caption)
    assert "5 special" in captions, captions
    assert len(at.sidebar.dataframe) == 1


def test_copy_as_code_is_drawn_only_while_open() -> None:
    at = run_page(LENS, prompt=DEFAULT_PROMPT)
    assert_clean(at)
    assert "Copy as code" in [e.label for e in at.expander]
    assert not at.code  # closed: nothing for the browser to highlight
    at.session_state["snippet_lens"] = True  # what opening it does
    at.run()
    assert_clean(at)
    code = " ".join(c.value for c in at.code)
    assert "run_lens" in code and DEFAULT_PROMPT in code
    at.run()  # it stays open across reruns
    assert "run_lens" in " ".join(c.value for c in at.code)


def test_the_full_table_is_computed_when_its_expander_opens() -> None:
    at = run_page(LENS, prompt=DEFAULT_PROMPT)
    assert_clean(at)
    assert not any("top_tokens" in d.value.columns for d in at.dataframe)  # closed: nothing computed or drawn
    at.session_state["x_full_table"] = True
    at.run()
    assert_clean(at)
    full = next(d.value for d in at.dataframe if "top_tokens" in d.value.columns)
    assert len(full) == 31 * 5  # every layer (embeddings + 30 blocks) x the 5 prompt tokens
    assert set(full.layer) == set(range(31))
