"""`python -m core attention-mlp`: next-token neurons, their prompts, the heads that switch them on, and
the head-ablation KS test (Neo, Cohen & Barez 2024) as tidy tables.

``--blocks`` are 1-based (block l writes layer l; core/layers.py), as every table's ``block`` column and the
``--layer`` of ``python -m core topics``. The old ``--layers`` took 0-based blocks (the paper's numbering); it now
ends with exit status 2 and a line that names the same blocks in the new numbering, so an old command line never
silently reads other neurons.
"""

from __future__ import annotations

import argparse

from core import validate
from core.analyses.attention_mlp.params import (
    DEFAULT_CORPUS,
    DEFAULT_N_TEXTS,
    DEFAULT_PER_LAYER,
    DEFAULT_SEED,
    MAX_TRIMMED_TOKENS,
    TABLES,
    TRIM_KEEP,
    TRIM_METHODS,
    HeadParams,
    ScanParams,
)
from core.cli.common import Bar, add_format, add_model, check_model, check_sizes, default_of, load_session, print_frame
from core.layers import layers_of_blocks

BOUNDS = {"per_layer": (1, None), "n_texts": (1, 100_000), "window": (2, 65_536), "top": (1, 10_000),
          "max_tokens": (2, 65_536), "seed": (0, validate.MAX_SEED)}


def _blocks(text: str, n_layers: int) -> list[int]:
    from core.analyses.attention_mlp.neurons import default_blocks  # imports torch: only once the model loads

    return validate.int_list("--blocks", text) if text.strip() else default_blocks(n_layers)


def refuse_old_layers(text: str | None) -> None:
    """ValueError (exit 2) for the removed 0-based ``--layers``, naming the same blocks as ``--blocks``."""
    if text is None:
        return
    try:
        same = ",".join(str(b) for b in layers_of_blocks(validate.int_list("--layers", text)))
    except ValueError:  # not numbers, or a negative one: no translation to offer
        same = ""
    if not same:
        raise ValueError("--layers took 0-based blocks; use --blocks with 1-based blocks (block l writes layer l), "
                         "e.g. --blocks 27,28.")
    raise ValueError(f"--layers took 0-based blocks; use --blocks {same} (1-based: block l writes layer l).")


def check_args(args: argparse.Namespace) -> list[str]:
    """Table, sizes, model, --blocks against config.json and the corpus, before torch loads; -> the texts."""
    refuse_old_layers(args.layers)
    validate.choice("table", args.table, TABLES)
    validate.choice("--trim", args.trim, TRIM_METHODS)
    check_sizes(args, BOUNDS)
    if validate.number_range("--keep", args.keep, 0.0, 1.0, lo_open=True) == 1.0:
        raise ValueError("--keep must lie strictly between 0 and 1 (a trimmed prompt keeps more than this share of "
                         "the activation; the paper: 0.8).")
    blocks = validate.int_list("--blocks", args.blocks)
    if args.blocks.strip() and not blocks:
        raise ValueError("--blocks is empty: give comma-separated 1-based blocks, e.g. 27,28, or leave it out for "
                         "the last blocks.")
    dims = check_model(args.model)
    if dims is not None:
        for block in blocks:
            validate.block("--blocks: block", block, dims.n_layers, first=1)
        if dims.d_mlp is not None:
            validate.int_range("--per-layer", args.per_layer, 1, dims.d_mlp)
    # after the checks: torch and the analysis load only for valid input
    from core.data import CORPORA, corpus_texts, evaluation_texts

    texts = validate.corpus(args.corpus, tuple(CORPORA))
    return evaluation_texts(corpus_texts(args.corpus)) if texts is None else texts


def cmd_attention_mlp(args: argparse.Namespace) -> None:
    texts = check_args(args)  # before loading the model: bad input fails fast
    # after the checks: torch and the analysis load only for valid input
    from core.analyses.attention_mlp.neurons import check_blocks
    from core.analyses.attention_mlp.pipeline import choose_neurons, corpus_sample, max_activating_prompts, run_heads

    session = load_session(args.model)
    blocks = check_blocks(session, _blocks(args.blocks, session.adapter.n_layers))
    neurons = choose_neurons(session, blocks, args.per_layer, args.control, args.seed,
                             tuple(args.reject.split(",")) if args.reject else ())
    if args.table == "neurons":
        print_frame(neurons, args.format)
        return
    scan = ScanParams(window=args.window, top=args.top, keep=args.keep, max_tokens=args.max_tokens, trim=args.trim)
    bar = Bar("max-activating prompts")
    prompts = max_activating_prompts(session, neurons, corpus_sample(texts, args.n_texts), scan, bar)
    bar.close()
    if args.table == "prompts":
        print_frame(prompts, args.format)
        return
    bar = Bar("head attributions")
    results = run_heads(session, prompts, HeadParams(include_own=args.include_own), bar)
    bar.close()
    print_frame(results[args.table], args.format)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``attention-mlp`` subcommand."""
    p = sub.add_parser("attention-mlp", help="which attention heads switch on next-token neurons (Neo et al.)")
    add_model(p, "'bundled', a hub id, a local folder; prefix 'random:'")
    p.add_argument("--blocks", default="",
                   help="1-based blocks (block l writes layer l), e.g. 27,28 (default: the last 3-4 blocks)")
    p.add_argument("--layers", default=None,
                   help="removed: took 0-based blocks; refused with the --blocks that name the same blocks")
    p.add_argument("--per-layer", type=int, default=DEFAULT_PER_LAYER,
                   help=f"neurons per block (default {DEFAULT_PER_LAYER})")
    p.add_argument("--reject", default="", help="extra comma-separated tokens to skip (glitch tokens)")
    p.add_argument("--control", action="store_true", help="random neurons instead (the paper's control)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the random-neuron control")
    p.add_argument("--corpus", default=DEFAULT_CORPUS, help="'wikipedia', 'lee', or a .txt/.jsonl/.csv file")
    p.add_argument("--n-texts", type=int, default=DEFAULT_N_TEXTS, help="texts scanned for max-activating prompts")
    p.add_argument("--window", type=int, default=default_of(ScanParams, "window"), help="tokens per scanning window")
    p.add_argument("--top", type=int, default=default_of(ScanParams, "top"), help="prompts kept per neuron")
    p.add_argument("--keep", type=float, default=TRIM_KEEP,
                   help="trim each prompt to its shortest suffix keeping more than this share of the neuron's "
                        "activation (default %(default)s, the paper's)")
    p.add_argument("--max-tokens", type=int, default=MAX_TRIMMED_TOKENS,
                   help="drop trimmed prompts longer than this many tokens (default %(default)s, the paper's)")
    p.add_argument("--trim", default="binary",
                   help="trimming search: 'binary' (a binary search on the suffix length, exact scan where the "
                        "activation is not monotone) or 'linear' (every suffix length, shortest first)")
    p.add_argument("--include-own", action="store_true", default=default_of(HeadParams, "include_own"),
                   help="also count the neuron's own block's attention heads (the paper: earlier blocks only)")
    p.add_argument("--table", default=TABLES[0], help=", ".join(TABLES))
    add_format(p)
    p.set_defaults(func=cmd_attention_mlp)
