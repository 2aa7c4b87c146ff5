"""`python -m core attention-mlp`: next-token neurons, their prompts, the heads that switch them on, and
the head-ablation KS test (Neo, Cohen & Barez 2024) as tidy tables."""

from __future__ import annotations

import argparse

from core import validate
from core.cli.common import Bar, check_model, check_sizes, load_session, print_frame

TABLES = ("neurons", "prompts", "attributions", "terms", "heads", "ablation", "ks", "context_share", "skipped")
BOUNDS = {"per_layer": (1, None), "n_texts": (1, 100_000), "window": (2, 65_536), "top": (1, 10_000)}


def _layers(text: str, n_layers: int) -> list[int]:
    from core.analyses.attention_mlp.neurons import default_layers

    return validate.int_list("--layers", text) if text.strip() else default_layers(n_layers)


def check_args(args: argparse.Namespace) -> list[str]:
    """Table, sizes, model, --layers against config.json and the corpus, before torch loads; -> the texts."""
    validate.choice("table", args.table, TABLES)
    check_sizes(args, BOUNDS)
    layers = validate.int_list("--layers", args.layers)
    dims = check_model(args.model)
    if dims is not None:
        for layer in layers:
            validate.block("--layers: block", layer, dims.n_layers)
        if dims.d_mlp is not None:
            validate.int_range("--per-layer", args.per_layer, 1, dims.d_mlp)
    from core.data import CORPORA, corpus_texts, evaluation_texts

    texts = validate.corpus(args.corpus, tuple(CORPORA))
    return evaluation_texts(corpus_texts(args.corpus)) if texts is None else texts


def cmd_attention_mlp(args: argparse.Namespace) -> None:
    texts = check_args(args)  # before loading the model: bad input fails fast
    from core.analyses.attention_mlp.prompts import ScanParams
    from core.analyses.attention_mlp.neurons import check_layers
    from core.analyses.attention_mlp.pipeline import (HeadParams, choose_neurons, corpus_sample, max_activating_prompts,
                                                 run_heads)

    session = load_session(args.model)
    layers = check_layers(session, _layers(args.layers, session.adapter.n_layers))
    neurons = choose_neurons(session, layers, args.per_layer, args.control, args.seed,
                             tuple(args.reject.split(",")) if args.reject else ())
    if args.table == "neurons":
        print_frame(neurons, args.format)
        return
    scan = ScanParams(window=args.window, top=args.top)
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
    p.add_argument("--model", default="bundled", help="'bundled', a hub id, a local folder; prefix 'random:'")
    p.add_argument("--layers", default="", help="0-based blocks, e.g. 26,27 (default: the last 3-4 blocks)")
    p.add_argument("--per-layer", type=int, default=20, help="neurons per layer (default 20)")
    p.add_argument("--reject", default="", help="extra comma-separated tokens to skip (glitch tokens)")
    p.add_argument("--control", action="store_true", help="random neurons instead (the paper's control)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random-neuron control")
    p.add_argument("--corpus", default="wikipedia", help="'wikipedia', 'lee', or a .txt/.jsonl/.csv file")
    p.add_argument("--n-texts", type=int, default=200, help="texts scanned for max-activating prompts")
    p.add_argument("--window", type=int, default=128, help="tokens per scanning window")
    p.add_argument("--top", type=int, default=20, help="prompts kept per neuron")
    p.add_argument("--include-own", action="store_true",
                   help="also count the neuron's own block's attention heads (the paper: earlier blocks only)")
    p.add_argument("--table", default="neurons", help=", ".join(TABLES))
    p.add_argument("--format", choices=("json", "csv"), default="json")
    p.set_defaults(func=cmd_attention_mlp)
