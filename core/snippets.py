""""Copy as code": short Python that reproduces a page's view with the core API (shown by ``ui/snippets.py``).

Each function returns source text that loads the model the way the command line does
(``ModelSession.load(ModelSpec.parse(model).resolved())``), builds the prompt (wrapped as a chat turn when the page
wrapped it) and calls the same core functions the view calls, with the view's parameters written out as literals
(``repr``), so the text runs as it stands in a Python shell at the repository root. Torch-free: only text is built.
"""

from __future__ import annotations

from typing import Sequence

_LOAD = "session = ModelSession.load(ModelSpec.parse({model!r}).resolved())"


def _ints(values: Sequence[int] | None) -> str:
    return "None" if values is None else repr([int(v) for v in values])


def _head(model: str, imports: list[str], prompts: dict[str, str], chat: bool) -> list[str]:
    """Imports, the session and the prompt variables (wrapped as chat turns with ``chat``)."""
    lines = ["from core.model.loading import ModelSpec", "from core.model.session import ModelSession", *imports]
    if chat:
        lines.append("from core.model.prompts import chat_prompt")
    lines += ["", _LOAD.format(model=model)]
    for name, text in prompts.items():
        lines.append(f"{name} = {text!r}")
        if chat:
            lines.append(f"{name} = chat_prompt(session.tokenizer, {name})  # the sidebar's \"Wrap as a chat turn\"")
    return lines


def _lens_line(lens: str, target_prompt: str) -> list[str]:
    if lens == "logit":
        return []
    return [f"lens = build_lens(session, {lens!r}, {target_prompt!r})"]


def lens_snippet(model: str, prompt: str, top_k: int, targets: Sequence[str] = (), lens: str = "logit",
                 target_prompt: str = "", layers: Sequence[int] | None = None,
                 positions: Sequence[int] | None = None, chat: bool = False) -> str:
    """The Lens view: ``run_lens`` on the prompt at ``layers`` x ``positions`` (None: all); ``result.frame`` is the
    table behind the heatmap."""
    imports = ["from core.analyses.lens import run_lens"]
    if lens != "logit":
        imports.append("from core.lenses.registry import build_lens")
    lines = _head(model, imports, {"prompt": prompt}, chat) + _lens_line(lens, target_prompt)
    lens_arg = "" if lens == "logit" else "lens=lens, "
    lines += [f"result = run_lens(session, prompt, {lens_arg}top_k={int(top_k)}, targets={list(targets)!r},",
              f"                  layers={_ints(layers)}, positions={_ints(positions)})",
              "frame = result.frame  # one row per (layer, position): layer 0 = embeddings, l = after block l",
              "print(frame)"]
    return "\n".join(lines) + "\n"


def whatif_snippet(model: str, prompt_a: str, prompt_b: str, top_k: int, targets: Sequence[str] = (),
                   lens: str = "logit", target_prompt: str = "", layers: Sequence[int] | None = None,
                   chat: bool = False) -> str:
    """The Lens page's what-if: prompt B continues A's trace; without typed targets both prompts are read on their
    final top-1 tokens at the last position; ``diff`` is the comparison table behind the heatmap (every position of
    B; the page shows the last ones)."""
    imports = ["from core.analyses.lens import compare_frames, run_lens"]
    if lens != "logit":
        imports.append("from core.lenses.registry import build_lens")
    lines = _head(model, imports, {"prompt_a": prompt_a, "prompt_b": prompt_b}, chat) + _lens_line(lens, target_prompt)
    lens_arg = "" if lens == "logit" else "lens=lens, "
    lines += ["trace_a = session.trace(prompt_a, keep_cache=True)",
              "trace_b, _ = session.trace_edit(trace_a, prompt_b)  # B continues A's key/value cache",
              f"targets = {list(targets)!r}"]
    if targets:
        lines.append("target_ids = None")
    else:
        lines += ["final = [session.adapter.n_layers]  # no typed targets: both prompts' final top-1 at the last "
                  "position",
                  f"last_a = run_lens(session, prompt_a, {lens_arg}top_k={int(top_k)}, trace=trace_a, layers=final,",
                  "                  positions=[trace_a.n_pos - 1])",
                  f"last_b = run_lens(session, prompt_b, {lens_arg}top_k={int(top_k)}, trace=trace_b, layers=final,",
                  "                  positions=[trace_b.n_pos - 1])",
                  "target_ids = list(dict.fromkeys([int(last_a.stats.target_ids[-1, 0]), "
                  "int(last_b.stats.target_ids[-1, 0])]))"]
    lines += [f"a = run_lens(session, prompt_a, {lens_arg}top_k={int(top_k)}, targets=targets, target_ids=target_ids,",
              f"             layers={_ints(layers)}, trace=trace_a)",
              f"b = run_lens(session, prompt_b, {lens_arg}top_k={int(top_k)}, targets=targets, target_ids=target_ids,",
              f"             layers={_ints(layers)}, trace=trace_b)",
              "diff = compare_frames(a, b)  # one row per (layer, position of B)",
              "print(diff)"]
    return "\n".join(lines) + "\n"


def generation_snippet(model: str, prompt: str, max_new_tokens: int, sample: bool = False, seed: int = 0,
                       temperature: float = 1.0, top_k: int = 0, lens_top_k: int = 10,
                       layers: Sequence[int] | None = None, chat: bool = False) -> str:
    """The generation view: ``generate`` (greedy, or sampled with the seed), then the logit lens over the prompt
    and continuation ids as generated."""
    imports = ["from core.analyses.generation import generate", "from core.analyses.lens import run_lens"]
    lines = _head(model, imports, {"prompt": prompt}, chat)
    sampling = f", sample=True, seed={int(seed)}, temperature={float(temperature)!r}, top_k={int(top_k)}" \
        if sample else ""
    lines += [f"gen = generate(session, prompt, {int(max_new_tokens)}{sampling})",
              "print(gen.text, f'(stopped: {gen.stopped})')",
              "trace = session.trace(gen.ids)  # the ids as generated, not re-tokenized text",
              f"result = run_lens(session, '', trace=trace, top_k={int(lens_top_k)}, layers={_ints(layers)})",
              "frame = result.frame  # positions from gen.n_prompt on are the continuation",
              "print(frame)"]
    return "\n".join(lines) + "\n"


def contributions_snippet(model: str, prompt: str, layer: int, position: int, target: int,
                          other: int | None = None, threshold: float | None = None) -> str:
    """The Contributions view: ``decompose`` of the residual at (layer, position) with each part's direct logit
    attribution to the token id ``target`` (and ``other``), and with ``threshold`` the contribution graph into it."""
    imports = ["from core.analyses.contributions import contribution_graph, decompose"]
    lines = _head(model, imports, {"prompt": prompt}, False)
    lines += [f"d = decompose(session, prompt, layer={int(layer)}, position={int(position)}, target={int(target)}, "
              f"other={None if other is None else int(other)})",
              "print(d.frame[d.frame.whole])  # embeddings + each block's attention and MLP + constant; "
              "d.frame[d.frame.fine] splits attention into heads"]
    if threshold is not None:
        lines += [f"graph = contribution_graph(session, prompt, target_position={int(position)}, "
                  f"layer={max(1, int(layer))}, threshold={float(threshold)!r})",
                  "print(graph.edges)"]
    return "\n".join(lines) + "\n"


def attention_snippet(model: str, prompt: str, block: int, position: int, target: int) -> str:
    """The Attention view: each head of ``block`` (1-based) at ``position``: its attention row, value-weighted
    contributions, and the head's direct logit attribution to the token id ``target``."""
    imports = ["from core.analyses.attention_heads import attention_at"]
    lines = _head(model, imports, {"prompt": prompt}, False)
    lines += [f"view = attention_at(session, prompt, {int(block)}, {int(position)}, target={int(target)})",
              "print(view.heads)  # one row per head: write norm, DLA, top source",
              "print(view.frame)  # one row per head x source position: attention, value-weighted"]
    return "\n".join(lines) + "\n"
