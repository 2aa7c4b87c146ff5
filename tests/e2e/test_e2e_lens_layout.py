"""End to end: the Lens heatmaps fit their container at any width, in headless Chromium.

A small Streamlit script (written to a temporary folder, no model needed) draws ``lens_heatmap`` in the main
area next to a sidebar like the app's, then a what-if ``compare_heatmap``, then two heatmaps side by side in
``st.columns(2)``, for 10, 24 or 48 positions (``?n=``). At 1280 and 1920 px browser width each chart must fit its
container (no horizontal scrolling of the page or of the chart), label the last position inside the viewport and
draw its colour legend; the side-by-side charts must not overlap. Screenshots go to tests/artifacts/layout/
(git-ignored). The charts are drawn with Vega's SVG renderer so that the test can read their axes and legends
(the app uses canvas; the layout is the same).

Without /usr/bin/chromium the test is skipped, except under CI (CI=true), where it fails instead.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterator

import pytest
from test_e2e import _require_browser, browser, streamlit_server  # noqa: F401 (browser: a fixture, run on
# this module's own server fixture)

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts" / "layout"
PAGE_RUN_MS = 60_000
SETTLE_POLLS = 30  # of 0.3 s
WIDTHS = (1280, 1920)
POSITIONS = (10, 24, 48)
CHART_KEYS = ("main", "compare", "left", "right")  # the order the script draws them in

pytestmark = pytest.mark.e2e

SCRIPT = '''
"""Lens heatmaps at the width of their container (the layout e2e test's app)."""
import numpy as np
import pandas as pd
import streamlit as st

from ui.charts.lens import compare_heatmap, lens_heatmap

WORDS = [" The", " capital", " of", " France", " is", " Paris", ",", " and", " interpretability", "\\\\n",
         " residual", " stream", " token", " layer", " prediction", " Rome", " the", " a"]


def lens_frame(n_layers: int, n_pos: int) -> pd.DataFrame:
    """A lens result's frame (the columns the charts use), with varied tokens and probabilities."""
    rng = np.random.default_rng(n_pos)
    rows = []
    for layer in range(n_layers + 1):
        for pos in range(n_pos):
            p = float(np.clip((layer + 1) / (n_layers + 2) + rng.normal(0, 0.15), 0.01, 0.99))
            top = WORDS[int(rng.integers(len(WORDS)))]
            rows.append({{"layer": layer, "position": pos, "token": WORDS[pos % len(WORDS)], "top_tokens": [top, " b"],
                         "top_probs": [p, (1 - p) / 2], "target": " Paris", "target_rank": int(rng.integers(1, 5000)),
                         "target_prob": p / 2, "entropy": 6.0 * (1 - p), "kl_to_final": 8.0 * (1 - p)}})
    return pd.DataFrame(rows)


def compare_frame(n_layers: int, n_pos: int) -> pd.DataFrame:
    """A what-if diff frame: prompt B's position 2 is an edited token."""
    rng = np.random.default_rng(n_pos + 1)
    rows = []
    for layer in range(n_layers + 1):
        for pos in range(n_pos):
            changed = bool(rng.random() < 0.3)
            rows.append({{"layer": layer, "position_a": pos, "position_b": pos, "token_a": WORDS[pos % len(WORDS)],
                         "token_b": " Italy" if pos == 2 else WORDS[pos % len(WORDS)], "top1_a": " Paris",
                         "top1_b": " Rome" if changed else " Paris", "top1_changed": changed,
                         "delta_target_prob": float(rng.normal(0, 0.2)), "delta_entropy": float(rng.normal()),
                         "delta_kl_to_final": float(rng.normal())}})
    return pd.DataFrame(rows)


def svg(chart):
    """The same chart drawn as SVG, so that the test can read its axes and legend."""
    chart.usermeta = {{"embedOptions": {{"renderer": "svg"}}}}
    return chart


st.set_page_config(page_title="Lens layout", layout="wide")
n_pos = int(st.query_params.get("n", "10"))
st.sidebar.subheader("Model")
st.sidebar.radio("Model", ["bundled (gpt2-tiny)", "Hugging Face id or path"], label_visibility="collapsed")
st.sidebar.subheader("Prompt")
st.sidebar.text_area("Prompt", "The capital of France is", height=120)
st.sidebar.button("Run", type="primary")
st.title("Lens")
frame = lens_frame(16, n_pos)
st.altair_chart(svg(lens_heatmap(frame, "top-1 probability", selected=(16, n_pos - 1))), width="stretch",
                on_select="rerun", key="main")
st.altair_chart(svg(compare_heatmap(compare_frame(16, n_pos), "Δ target probability")), width="stretch",
                key="compare")
left, right = st.columns(2)
with left:
    st.markdown("**logit lens**")
    st.altair_chart(svg(lens_heatmap(frame, "target rank", selected=(3, 1))), width="stretch", key="left")
with right:
    st.markdown("**tuned lens**")
    st.altair_chart(svg(lens_heatmap(frame, "KL to final")), width="stretch", key="right")
'''

# The page's and each chart's geometry: boxes, scroll sizes, the x labels (anchor, angle, box), the legend, the
# cells' visible texts.
MEASURE = """() => {
    const box = el => { const r = el.getBoundingClientRect();
                        return {left: r.left, right: r.right, top: r.top, bottom: r.bottom, width: r.width}; };
    const anchor = text => {
        const t = text.getAttribute('transform') || '';
        const move = /translate\\(([-0-9.e]+),/.exec(t), turn = /rotate\\(([-0-9.e]+)\\)/.exec(t);
        return {x: move ? +move[1] : 0, angle: turn ? +turn[1] : 0};
    };
    const main = document.querySelector('[data-testid="stMainBlockContainer"]');
    const charts = [...document.querySelectorAll('[data-testid="stVegaLiteChart"]')].map(chart => {
        const svg = chart.querySelector('svg.marks');
        const xAxis = svg && [...svg.querySelectorAll('g.role-axis')]
            .find(g => (g.getAttribute('aria-label') || '').startsWith('X-axis'));
        const labels = xAxis ? [...xAxis.querySelectorAll('g.role-axis-label text')] : [];
        const legend = svg && svg.querySelector('g.role-legend');
        const cellTexts = svg ? [...svg.querySelectorAll('g.mark-text.role-mark text')]
            .filter(t => t.textContent !== '' && +(t.getAttribute('opacity') ?? 1) > 0) : [];
        const scrollers = [chart, ...chart.querySelectorAll('*')].filter(el => el.scrollWidth > el.clientWidth + 1
            && getComputedStyle(el).overflowX !== 'visible');
        return {box: box(chart), svg: svg ? box(svg) : null,
                labels: labels.map(t => ({text: t.textContent, ...anchor(t), box: box(t),
                                          fontSize: parseFloat(t.getAttribute('font-size'))})),
                legend: legend ? box(legend) : null,
                legendMarks: legend ? legend.querySelectorAll('path, rect').length : 0,
                cellTexts: cellTexts.map(t => ({width: box(t).width,
                                                fontSize: parseFloat(t.getAttribute('font-size'))})),
                scrollers: scrollers.map(el => el.tagName + '.' + el.className)};
    });
    return {main: box(main), innerWidth: window.innerWidth,
            pageScrollWidth: document.scrollingElement.scrollWidth,
            mainScrollWidth: document.querySelector('[data-testid="stMain"]').scrollWidth,
            mainClientWidth: document.querySelector('[data-testid="stMain"]').clientWidth, charts};
}"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The layout script under `streamlit run` on a free port; yields its base URL and always terminates it."""
    _require_browser()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    script = tmp_path_factory.mktemp("lens_layout") / "lens_layout_app.py"
    script.write_text(SCRIPT.format(), encoding="utf-8")  # {{ }} in SCRIPT are literal braces
    with streamlit_server(script, ARTIFACTS / "streamlit.log", "--server.fileWatcherType", "none",
                          "--theme.base", "light") as base:
        yield base


def _wait_drawn(tab) -> None:
    """Wait until the script has run and every chart has drawn its SVG with its x-axis labels, then settles."""
    tab.wait_for_function(
        """n => {
            const app = document.querySelector('[data-testid="stApp"]');
            const charts = document.querySelectorAll('[data-testid="stVegaLiteChart"] svg.marks');
            return app && app.getAttribute('data-test-script-state') === 'notRunning' && charts.length === n
                && [...charts].every(svg => svg.querySelector('g.role-axis-label text'));
        }""",
        arg=len(CHART_KEYS), timeout=PAGE_RUN_MS, polling=250)
    # fit-x lays a chart out again once its width is known: wait until the drawings keep their sizes for 0.6 s
    sizes = """() => [...document.querySelectorAll('[data-testid="stVegaLiteChart"] svg.marks')]
                     .map(svg => svg.getAttribute('width') + 'x' + svg.getAttribute('height')).join(' ')"""
    seen = [tab.evaluate(sizes)]
    for _ in range(SETTLE_POLLS):
        tab.wait_for_timeout(300)
        seen.append(tab.evaluate(sizes))
        if len(seen) >= 3 and seen[-1] == seen[-2] == seen[-3]:
            return
    pytest.fail(f"the charts kept changing size: {seen[-3:]}")


def _intersect(a: dict, b: dict) -> bool:
    return a["left"] < b["right"] and b["left"] < a["right"] and a["top"] < b["bottom"] and b["top"] < a["bottom"]


def _screenshot(tab, width: int, name: str) -> Path:
    """A full-page PNG: the viewport is grown to the main area's height (it scrolls inside the page)."""
    height = tab.evaluate("""() => Math.max(document.querySelector('[data-testid="stMain"]').scrollHeight,
                                            document.body.scrollHeight)""")
    tab.set_viewport_size({"width": width, "height": min(int(height) + 40, 6000)})
    tab.wait_for_timeout(500)
    path = ARTIFACTS / f"{name}.png"
    tab.screenshot(path=str(path), full_page=True)
    return path


def check_chart(chart: dict, n_pos: int, width: int, main: dict, at: str) -> None:
    """One chart fits its element and the main container, labels every (or every k-th) position without overlap,
    always the last one inside the viewport, keeps its cell text readable and draws its legend."""
    assert chart["svg"] is not None, f"{at}: no SVG drawn"
    assert not chart["scrollers"], f"{at}: scrolls sideways inside: {chart['scrollers']}"
    assert chart["svg"]["right"] <= chart["box"]["right"] + 1, f"{at}: drawn past its element"
    assert chart["box"]["right"] <= min(main["right"], width) + 1, f"{at}: past the main container"
    labels = sorted(chart["labels"], key=lambda label: label["x"])
    assert len(labels) == n_pos, f"{at}: {len(labels)} x labels for {n_pos} positions"
    band = (labels[-1]["x"] - labels[0]["x"]) / max(n_pos - 1, 1)
    shown = [label for label in labels if label["text"].strip()]
    last = shown[-1] if shown else None
    assert last is not None and last["text"].startswith(f"{n_pos - 1} "), \
        f"{at}: the last position is not labelled (last label {last and last['text']!r})"
    assert 0 <= last["box"]["left"] and last["box"]["right"] <= width, \
        f"{at}: the last position's label is outside the viewport: {last['box']}"
    for a, b in zip(shown, shown[1:]):
        if a["angle"] == 0:  # side by side: their boxes must not overlap
            assert a["box"]["right"] <= b["box"]["left"] + 0.5, f"{at}: x labels {a['text']!r}, {b['text']!r} overlap"
        else:  # rotated: parallel lines of text, as far apart as their anchors times sin(angle)
            gap = (b["x"] - a["x"]) * abs(math.sin(math.radians(a["angle"])))
            assert gap >= a["fontSize"], f"{at}: x labels {a['text']!r}, {b['text']!r} overlap ({gap:.1f} px apart)"
    for text in chart["cellTexts"]:
        assert text["fontSize"] >= 9, f"{at}: cell text of {text['fontSize']} px"
        assert text["width"] <= band + 0.5, f"{at}: cell text {text['width']:.1f} px wide in a {band:.1f} px cell"
    assert chart["legend"] is not None and chart["legendMarks"] > 0, f"{at}: no colour legend"
    assert chart["box"]["left"] <= chart["legend"]["left"] and chart["legend"]["right"] <= chart["box"]["right"] + 1, \
        f"{at}: the legend is cut off: {chart['legend']} in {chart['box']}"


@pytest.mark.parametrize("width", WIDTHS)
def test_lens_heatmaps_fit_their_container(browser, server: str, width: int) -> None:  # noqa: F811
    context = browser.new_context(viewport={"width": width, "height": 1000})
    tab = context.new_page()
    problems: list[str] = []
    tab.on("pageerror", lambda err: problems.append(str(err)))
    try:
        for n_pos in POSITIONS:
            tab.set_viewport_size({"width": width, "height": 1000})
            tab.goto(f"{server}/?n={n_pos}")
            _wait_drawn(tab)
            where = f"{width} px, {n_pos} positions"
            state = tab.evaluate(MEASURE)
            _screenshot(tab, width, f"lens_w{width}_n{n_pos}")
            assert state["pageScrollWidth"] <= state["innerWidth"], f"{where}: the page scrolls sideways"
            assert state["mainScrollWidth"] <= state["mainClientWidth"], f"{where}: the main area scrolls sideways"
            charts = dict(zip(CHART_KEYS, state["charts"], strict=True))
            for key, chart in charts.items():
                check_chart(chart, n_pos, width, state["main"], f"{where}, chart {key!r}")
            assert charts["main"]["cellTexts"] or n_pos > 24, f"{where}: no cell text in the full-width chart"
            assert not _intersect(charts["left"]["box"], charts["right"]["box"]), \
                f"{where}: the side-by-side charts overlap"
            assert not _intersect(charts["left"]["svg"], charts["right"]["svg"]), \
                f"{where}: the side-by-side drawings overlap"
        assert not problems, f"JavaScript errors: {problems}"
    finally:
        context.close()
