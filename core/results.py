"""RESULTS.md: each claim of the five papers judged on one model at a preset (``python -m core results``).

Every analysis module named in :data:`PAPERS` has ``claims(session, preset, progress) -> list[dict]`` returning
verdict rows (:func:`core.analyses.uncertainty.verdict_row`); they run through the same disk cache the pages read,
so a second run, or a page opened with the same preset, reuses the work.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import platform
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from core.progress import Progress, no_progress

if TYPE_CHECKING:
    from core.model.session import ModelSession

# page -> (paper, module with claims(), the page's path in the app)
PAPERS: dict[str, tuple[str, str, str]] = {
    "extraction": ("Patchscopes (Ghandeharioun et al. 2024) and logitscope: next-token extraction",
                   "core.analyses.extraction", "Extraction"),
    "depth": ("Gupta et al. 2025, How Do LLMs Use Their Depth?", "core.analyses.depth.results", "Depth"),
    "topk": ("Lioubashevski et al. 2025, Looking Beyond the Top-1", "core.analyses.topk.results", "Top-k order"),
    "topics": ("Lim & Lauw 2023, Superposed topic models", "core.analyses.topics.results", "Neuron topics"),
    "attention_mlp": ("Neo, Cohen & Barez 2024, Interpreting Context Look-ups", "core.analyses.attention_mlp.results",
                      "Attention → MLP"),
}
PRESETS = ("paper", "quick")
LABELS = {"paper": "Paper settings", "quick": "Quick look"}


def parse_pages(pages: Sequence[str], preset: str) -> list[tuple[str, str]]:
    """["depth", "topk=quick"] -> [("depth", preset), ("topk", "quick")]: each page with the preset it runs at."""
    out = []
    for item in pages:
        page, _, own = item.partition("=")
        if page not in PAPERS:
            raise ValueError(f"Unknown page {page!r}; choose from {', '.join(PAPERS)}.")
        if own and own not in PRESETS:
            raise ValueError(f"Unknown preset {own!r} for {page}; choose from {', '.join(PRESETS)}.")
        out.append((page, own or preset))
    return out


def collect(session: "ModelSession", pages: Sequence[tuple[str, str]], progress: Progress = no_progress
            ) -> tuple[list[dict], dict[str, float]]:
    """(rows, seconds per page): every (page, preset)'s verdict rows, each with its ``page``, ``paper`` and
    ``preset``."""
    rows, seconds = [], {}
    for i, (page, preset) in enumerate(pages):
        paper, module, _ = PAPERS[page]
        claims = importlib.import_module(module).claims
        start = time.perf_counter()
        part = claims(session, preset, lambda f, m, i=i: progress((i + f) / len(pages), f"{page}: {m}"))
        seconds[page] = time.perf_counter() - start
        rows += [{"page": page, "paper": paper, "preset": preset, **row} for row in part]
    return rows, seconds


def _number(x: float) -> str:
    if x is None or not math.isfinite(x):
        return "–"
    return f"{x:.3g}" if abs(x) < 1000 else f"{x:,.0f}"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def run_info(command: str, seconds: dict[str, float]) -> dict:
    """Where one ``results`` run happened: its command, date, machine and compute time per page."""
    return {"command": command, "date": date.today().isoformat(),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores", "seconds": dict(seconds)}


def markdown(rows: list[dict], model: str, command: str, seconds: dict[str, float]) -> str:
    """The RESULTS.md text: how it was made, then one table (one row per claim), then the rows as data (an HTML
    comment that :func:`read_rows` reads back, so ``--update`` can rerun some pages and keep the others). A row
    with a ``run`` (:func:`run_info`) was kept from an earlier run and says so in the header."""
    this = run_info(command, seconds)
    runs: dict[str, dict] = {}
    for r in rows:
        run = r.get("run") or this
        runs.setdefault(json.dumps(run, sort_keys=True), run)
    counts = {w: sum(r["verdict"] == w for r in rows if r.get("kind") != "check")
              for w in ("holds", "does not hold", "cannot tell at this n", "cannot tell yet")}

    def made(run: dict) -> str:
        pages = [PAPERS[p][2] for p in PAPERS if any(r["page"] == p and (r.get("run") or this) == run for r in rows)]
        return (f"`{run['command']}` on {run['date']} ({run['machine']}): {', '.join(pages)}; compute time "
                "(seconds; cached parts count ~0): "
                + ", ".join(f"{page} {t:.0f}" for page, t in run["seconds"].items()))

    lines = ["# Results: the five papers' claims on the bundled model", "",
             "Made by " + "; and by ".join(made(run) for run in runs.values()) + "."]
    lines[-1] += (f" Model `{model}`. Each row comes from the same functions and disk cache as the app's pages, so "
                  "opening a page with its **Paper settings** preset shows the same numbers (the **preset** column "
                  "says which preset each row ran at).")
    lines += [
        "",
        "How to read a row: **value** is the estimate and **95 % CI** its interval (Wilson for a proportion, "
        "percentile bootstrap for a mean or a difference), over **n** independent examples. A claim *holds* when "
        "the whole interval lies on the claim's side of its threshold, *does not hold* when it lies wholly on the "
        "other side, and is *cannot tell at this n* when the interval straddles it. A *check* is true by "
        "construction (a test of the code, not a finding). Layers: 0 = the embeddings, l = after block l.",
        "",
        "Findings: " + ", ".join(f"{k} {v}" for k, v in counts.items() if v) + ".",
    ]
    quick = sorted({PAPERS[r["page"]][2] for r in rows if r.get("preset") == "quick"})
    if quick:
        lines += ["", f"**Not at Paper settings here: {', '.join(quick)}** (Quick look rows: small n, so mostly "
                      f"\"cannot tell\"). {'Its' if len(quick) == 1 else 'Their'} paper-settings run"
                      f"{'' if len(quick) == 1 else 's'} take{'s' if len(quick) == 1 else ''} hours on 2 CPU cores; "
                      "`python -m core results "
                      "--update --pages PAGE` reruns one page at Paper settings, resuming from the disk cache."]
    lines += [
        "",
        "| paper | preset | claim | kind | value | 95 % CI | n | verdict | evidence |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ci = "–" if not (_finite(r["low"]) and _finite(r["high"])) else \
            f"{_number(r['low'])} to {_number(r['high'])}"
        lines.append("| " + " | ".join(_cell(c) for c in (
            PAPERS[r["page"]][2], LABELS.get(r.get("preset", ""), r.get("preset", "")), r["claim"],
            r.get("kind", "finding"), _number(r["estimate"]), ci, r["n"],
            r["verdict"], r["evidence"])) + " |")
    data = [{**{k: _plain(v) for k, v in r.items() if k in ROW_KEYS}, "run": r.get("run") or this} for r in rows]
    payload = json.dumps(data, ensure_ascii=False).replace("--", "-\\u002d")  # "--" may not appear in a comment
    lines += ["", DATA_START + payload + DATA_END]
    return "\n".join(lines) + "\n"


ROW_KEYS = ("page", "paper", "preset", "claim", "kind", "estimate", "low", "high", "n", "verdict", "evidence")
DATA_START, DATA_END = "<!-- layerscope-results ", " -->"


def _finite(x) -> bool:
    return x is not None and isinstance(x, (int, float)) and math.isfinite(x)


def _plain(value):
    """JSON-safe: NaN/inf as None, numpy scalars as Python numbers."""
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def read_rows(text: str) -> list[dict]:
    """The rows a RESULTS.md written by :func:`markdown` holds, each with the ``run`` that made it (ValueError when
    the file holds none: an older or hand-edited file)."""
    start = text.rfind(DATA_START)
    end = text.find(DATA_END, start + len(DATA_START)) if start >= 0 else -1
    if start < 0 or end < 0:
        raise ValueError("it holds no rows as data (written by an older version): rerun every page instead of "
                         "--update.")
    try:
        rows = json.loads(text[start + len(DATA_START):end])
    except json.JSONDecodeError as err:
        raise ValueError(f"its rows cannot be read ({err}); rerun every page instead of --update.") from None
    for r in rows:
        if not isinstance(r, dict) or r.get("page") not in PAPERS or not isinstance(r.get("run"), dict):
            raise ValueError("it holds a row that is not a results row; rerun every page instead of --update.")
        for key in ("estimate", "low", "high"):
            r[key] = math.nan if r.get(key) is None else float(r[key])
    return rows


def merge(kept: list[dict], new: list[dict]) -> list[dict]:
    """``new`` rows replace every kept row of their pages; the table keeps the pages' order of :data:`PAPERS`."""
    redone = {r["page"] for r in new}
    rows = [r for r in kept if r["page"] not in redone] + new
    order = list(PAPERS)
    return sorted(rows, key=lambda r: order.index(r["page"]))  # stable: claims keep their order within a page


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename: a crash leaves the old file or the new."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
