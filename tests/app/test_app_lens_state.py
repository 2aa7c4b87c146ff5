"""The Lens page's state never lies (issue 14, part 6): each test fails on the behaviour the issue reported."""

from __future__ import annotations

from test_app import DEFAULT_PROMPT, LENS, assert_clean, charts, errors, run_page, selectbox

from ui.format import show_token

LONG = "The capital of France is Paris. " * 12  # 85 tokens: a window of the last 24 positions


def test_a_new_prompt_resets_the_selection_to_its_prediction_cell() -> None:
    at = run_page(LENS, prompt=DEFAULT_PROMPT, cell="5,1")
    assert selectbox(at, "Position").value == 1
    at.sidebar.text_area(key="w_prompt").set_value("Paris is a city in the north of France, and Rome")
    at.sidebar.button(key="w_run_prompt").click().run()
    assert_clean(at)
    n_pos = len(selectbox(at, "Position").options)
    assert n_pos > 5
    assert (selectbox(at, "Layer").value, selectbox(at, "Position").value) == (30, n_pos - 1)
    assert at.query_params["cell"] == f"30,{n_pos - 1}"
    # the picker's token is the new prompt's last token, and the details describe the same cell
    heading = f"after block 30 at position {n_pos - 1} ({show_token(' Rome')})"
    assert any(heading in m.value for m in at.markdown), [m.value for m in at.markdown]


def test_a_new_prompt_resets_the_position_window() -> None:
    at = run_page(LENS, prompt=LONG, positions="3-20")
    assert at.slider[0].value == (3, 20)
    at.sidebar.text_area(key="w_prompt").set_value(LONG + "Rome is")
    at.sidebar.button(key="w_run_prompt").click().run()
    assert_clean(at)
    lo, hi = at.slider[0].value
    n_pos = len(selectbox(at, "Position").options)
    assert (lo, hi) == (n_pos - 24, n_pos - 1)


def test_a_typed_prompt_survives_page_controls_and_is_marked_not_run() -> None:
    at = run_page(LENS)
    at.sidebar.text_area(key="w_prompt").set_value("The capital of Italy is").run()  # typed, not run
    assert any("not run yet" in c.value for c in at.sidebar.caption), [c.value for c in at.sidebar.caption]
    selectbox(at, "Colour cells by").set_value("entropy").run()  # a page control touched before Run
    assert_clean(at)
    assert at.sidebar.text_area(key="w_prompt").value == "The capital of Italy is"  # the draft is kept
    assert at.query_params["prompt"] == DEFAULT_PROMPT  # and not analysed yet: the page shows what ran
    at.sidebar.button(key="w_run_prompt").click().run()
    assert at.query_params["prompt"] == "The capital of Italy is"
    assert not any("not run yet" in c.value for c in at.sidebar.caption)


def test_controls_keep_their_values_through_a_failed_model_load() -> None:
    """A regression guard: this AppTest passes on the code before issue 14 too (the reported stale controls were seen
    in the browser, which AppTest does not reproduce)."""
    at = run_page(LENS, color="entropy", top_k="5", stride="2")
    at.sidebar.radio(key="w_model_choice").set_value("Hub id or local folder…").run()
    at.sidebar.text_input(key="w_model_source").set_value("nonexistent-org/nonexistent-model").run()
    assert any("nonexistent-org/nonexistent-model" in e for e in errors(at))
    at.sidebar.radio(key="w_model_choice").set_value("SmolLM2-135M-Instruct (bundled, offline)").run()
    assert_clean(at)
    assert selectbox(at, "Colour cells by").value == "entropy"
    assert at.number_input(key="w_top_k").value == 5 and at.number_input(key="w_stride").value == 2
    assert (at.query_params["color"], at.query_params["top_k"], at.query_params["stride"]) == ("entropy", "5", "2")
    _, data = charts(at)[0]
    assert sorted(data.layer.unique())[:3] == [0, 2, 4]  # the chart uses the stride the control shows


def test_an_empty_target_prompt_is_an_error_not_the_default() -> None:
    at = run_page(LENS, lens="identity", identity_prompt="   ")
    assert not at.exception
    assert any("target prompt is empty" in e for e in errors(at)), errors(at)
    assert not charts(at)  # nothing ran under a prompt the researcher did not type


def test_several_targets_say_which_colours_the_cells_and_let_the_user_pick() -> None:
    at = run_page(LENS, color="target probability", target=[" Paris", " London"])
    assert_clean(at)
    [picker] = [r for r in at.radio if r.label == "Colour by the target"]
    assert picker.options == [show_token(" Paris"), show_token(" London")] and picker.value == show_token(" Paris")
    _, paris = charts(at)[0]
    picker.set_value(show_token(" London")).run()
    assert_clean(at)
    _, london = charts(at)[0]
    assert set(london.target_shown) == {show_token(" London")} and set(paris.target_shown) == {show_token(" Paris")}
    assert at.query_params["color_target"] == "1"
    last = (paris.layer == 30) & (paris.position == paris.position.max())
    assert float(paris[last].target_prob.iloc[0]) > float(london[(london.layer == 30)
                                                                  & (london.position == london.position.max())]
                                                           .target_prob.iloc[0])


def test_what_if_shows_inserted_tokens_and_lets_the_user_inspect_b() -> None:
    at = run_page(LENS, whatif="1", prompt_b="The old capital of France is")
    assert_clean(at)
    [(_, diff)] = [(s, d) for s, d in charts(at) if "position_b" in d.columns]
    assert diff.position_b.nunique() == diff.position_b.max() + 1  # every position of B has a column
    assert (diff.status == "inserted").any()  # " old" is marked
    assert any("no counterpart in A" in c.value for c in at.caption), [c.value for c in at.caption]
    selectbox(at, "B: position").set_value(1).run()
    assert_clean(at)
    assert any("Prompt B: top-" in m.value and "position 1" in m.value for m in at.markdown)


def test_what_if_with_an_unrelated_prompt_keeps_every_column() -> None:
    at = run_page(LENS, whatif="1", prompt_b="A transformer reads tokens and writes")
    assert_clean(at)
    [(_, diff)] = [(s, d) for s, d in charts(at) if "position_b" in d.columns]
    assert diff.position_b.nunique() > 3


def test_what_if_colour_reopens_from_the_url() -> None:
    at = run_page(LENS, whatif="1", prompt_b="The capital of Germany is", whatif_color="Δ entropy")
    assert_clean(at)
    assert at.radio(key="w_whatif_color").value == "Δ entropy"
    [(spec, _)] = [(s, d) for s, d in charts(at) if "position_b" in d.columns]
    assert "delta_entropy" in str(spec)
    at.radio(key="w_whatif_color").set_value("top-1 changed").run()
    assert at.query_params["whatif_color"] == "top-1 changed"
