"""Building blocks of the Depth page: one tab per section, each a background job with its figure."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from core.analyses.depth.sections import run_section
from core.analyses.depth.verdicts import verdicts
from core.cache import stable_key
from core.data import CORPORA
from ui import cached
from ui import job_panel as jobs
from ui.downloads import show_chart, tables_expander

DEFAULT_N = {"pos": 20, "facts": 40, "options": 10, "frequency": 40}
N_HELP = {"pos": "kept examples per tag", "facts": "prompts in all (shared by the relations)",
          "options": "examples per task", "frequency": "random Wikipedia prefixes"}


def _key(spec_key: str, lens_name: str, section: str, n: int, seed: int) -> str:
    version = getattr(cached.build_lens(spec_key, lens_name), "version", "")
    return stable_key("depth-job", model=cached.get_session(spec_key).identity(), section=section, n=n,
                      seed=seed, lens=lens_name, version=version)


def section_job(spec_key: str, lens_name: str, section: str, seed: int) -> dict[str, pd.DataFrame] | None:
    """Sample size + Run for one section; returns its frames once computed (None before)."""
    n = int(st.number_input(f"n ({N_HELP[section]})", 1, 2000, DEFAULT_N[section], key=f"w_depth_n_{section}"))
    key = _key(spec_key, lens_name, section, n, seed)
    lens = cached.build_lens(spec_key, lens_name)
    session = cached.get_session(spec_key)
    return jobs.job_panel(key, f"Depth: {section}",
                          lambda progress: run_section(session, lens, section, n, seed, progress),
                          button_key=f"run_depth_{section}",
                          caption="Results are cached on disk: a second run with the same settings is instant.")


def curves_chart(curves: pd.DataFrame, title: str) -> alt.Chart:
    """Mean earliest layer with rank <= k (x) against k (y, log), one line per group (the paper's axes)."""
    return alt.Chart(curves.dropna(subset=["mean_layer"])).mark_line(point=alt.OverlayMarkDef(size=12)).encode(
        x=alt.X("mean_layer:Q", title="mean earliest layer with rank ≤ k (0 = embeddings)"),
        y=alt.Y("k:Q", scale=alt.Scale(type="log"), title="k"),
        color=alt.Color("group:N", title=title), order="k:Q",
        tooltip=["group", "k", alt.Tooltip("mean_layer:Q", format=".2f"), alt.Tooltip("std_layer:Q", format=".2f"), "n"],
    ).properties(width=560, height=320)


def options_chart(summary: pd.DataFrame) -> alt.Chart:
    data = summary.melt(id_vars=["task", "example"], value_vars=["identify_rel", "decision_rel"],
                        var_name="measure", value_name="relative_depth").dropna()
    data["measure"] = data.measure.map({"identify_rel": "options identified", "decision_rel": "decision settled"})
    return alt.Chart(data).mark_boxplot(extent="min-max").encode(
        x=alt.X("relative_depth:Q", scale=alt.Scale(domain=[0, 1]), title="relative depth (layer / L)"),
        y=alt.Y("measure:N", title=None, axis=alt.Axis(labelLimit=200)), color=alt.Color("task:N"),
        yOffset="task:N",
    ).properties(width=560, height=200)


def option_probability_chart(rows: pd.DataFrame) -> alt.Chart:
    """Mean probability of each option across layers, one panel per task."""
    mean = rows.groupby(["task", "option", "layer"], as_index=False).agg(prob=("prob", "mean"),
                                                                         rank=("rank", "median"))
    return alt.Chart(mean).mark_line(point=True).encode(
        x=alt.X("layer:Q", title="layer (0 = embeddings)"), y=alt.Y("prob:Q", title="mean probability"),
        color=alt.Color("option:N"), tooltip=["task", "option", "layer", alt.Tooltip("prob:Q", format=".3f"),
                                               alt.Tooltip("rank:Q", title="median rank")],
    ).properties(width=300, height=220).facet(column=alt.Column("task:N", title=None))


def shares_chart(shares: pd.DataFrame) -> alt.Chart:
    order = list(dict.fromkeys(shares.column))
    return alt.Chart(shares).mark_bar().encode(
        x=alt.X("column:N", sort=order, title="layer of the top-1 (final = the model's prediction)"),
        y=alt.Y("share:Q", stack="normalize", title="share of examples"),
        color=alt.Color("bucket:N", sort=["Top-10", "Top-100", "Top-1000", "Rest"], title="frequency bucket"),
        tooltip=["column", "bucket", alt.Tooltip("share:Q", format=".0%"), "count"],
    ).properties(width=620, height=280)


def flips_chart(flips: pd.DataFrame) -> alt.Chart:
    return alt.Chart(flips).mark_line(point=True).encode(
        x=alt.X("layer:Q", title="layer (0 = embeddings)"),
        y=alt.Y("flip_rate:Q", scale=alt.Scale(domain=[0, 1]), title="flip rate (top-1 ≠ final)"),
        color=alt.Color("bucket:N", sort=["Top-10", "Top-100", "Top-1000", "Rest"]),
        tooltip=["layer", "bucket", alt.Tooltip("flip_rate:Q", format=".0%"), "n"],
    ).properties(width=620, height=260)


def show_section(section: str, frames: dict[str, pd.DataFrame]) -> None:
    """The section's figure(s) and tables with downloads."""
    figures = {"pos": [("curves", lambda f: curves_chart(f["curves"], "tag"))],
               "facts": [("curves", lambda f: curves_chart(f["curves"], "answer token"))],
               "options": [("summary", lambda f: options_chart(f["summary"])),
                           ("rows", lambda f: option_probability_chart(f["rows"]))],
               "frequency": [("shares", lambda f: shares_chart(f["shares"])),
                             ("flips", lambda f: flips_chart(f["flips"]))]}[section]
    if section == "pos":
        st.caption("Examples kept per tag (the model's greedy token is the word's first sub-token): "
                   + ", ".join(f"{r.tag} {r.kept} of {r.tried} tried" for r in frames["counts"].itertuples()))
    if section == "frequency":
        st.caption(f"Frequencies counted with this model's tokenizer over the {CORPORA['wikipedia']}.")
    for table, build in figures:
        show_chart(build(frames), frames[table], f"depth_{section}_{table}")
    tables_expander(frames, f"depth_{section}")


def show_verdicts(results: dict[str, dict[str, pd.DataFrame]]) -> None:
    if not results:
        st.info("Run the sections above; each claim is judged on the sections it needs.")
        return
    for verdict in verdicts(results):
        holds = verdict["holds"]
        icon = {True: ":material/check_circle:", False: ":material/cancel:"}.get(holds, ":material/help:")
        word = {True: "holds", False: "does not hold"}.get(holds, "cannot tell yet")
        st.markdown(f"{icon} **{verdict['claim']}** — {word} for this model ({verdict['evidence']}).")
