"""`python -m core contributions`: what wrote the residual at one cell and each part's direct logit attribution, or
(``--graph``) the contribution graph into that cell."""

from __future__ import annotations

import argparse
import sys

from core import validate
from core.cli.common import add_model, check_model, load_session, log, print_frame

FORMATS = ("table", "csv", "json")
DEFAULT_THRESHOLD = 0.04  # = core.analyses.contributions.DEFAULT_THRESHOLD (not imported: that module loads torch)


def _print(frame, fmt: str) -> None:
    """``table``: aligned text; ``csv`` / ``json`` as every subcommand prints them."""
    if fmt == "table":
        sys.stdout.write(frame.to_string(index=False) + "\n")
    else:
        print_frame(frame, fmt)


def check_args(args: argparse.Namespace) -> None:
    """Everything that needs no model: prompt, layer (against config.json when known), threshold, flags."""
    dims = check_model(args.model)
    if not args.prompt.strip():
        raise ValueError("--prompt is empty: give the text to analyse.")
    validate.position("--position", args.position, args.prompt)
    if args.layer is not None:
        if args.layer < (1 if args.graph else 0):
            raise ValueError(f"--layer {args.layer}: layers are 0 (the embeddings) .. L (after block L)"
                             + ("; the graph needs a block: 1..L." if args.graph else "."))
        if dims is not None and args.layer > dims.n_layers:
            raise ValueError(f"--layer {args.layer}: this model has layers 0..{dims.n_layers} (layer l = the residual "
                             f"after block l; blocks 1..{dims.n_layers}).")
    if not 0.0 <= args.threshold <= 1.0:
        raise ValueError(f"--threshold {args.threshold}: give a share of a node's incoming weight in 0..1.")
    if args.graph and (args.heads or args.other is not None):
        raise ValueError("--heads and --other apply to the decomposition table, not to --graph.")
    for flag, token in (("--target", args.target), ("--other", args.other)):
        if token == "":
            raise ValueError(f"{flag} is empty: type a token such as ' Paris' (mind the leading space).")


def cmd_contributions(args: argparse.Namespace) -> None:
    check_args(args)
    from core.analyses.contributions import contribution_graph, decompose  # torch: only once the input is checked

    session = load_session(args.model)
    layer = session.adapter.n_layers if args.layer is None else args.layer
    if args.graph:
        graph = contribution_graph(session, args.prompt, target_position=args.position, layer=layer,
                                   threshold=args.threshold)
        log.warning("%s", graph.method)
        log.warning("%d of %d edges kept at threshold %g; target: layer %d, position %d (%r)", len(graph.edges),
                    graph.n_candidates, graph.threshold, graph.layer, graph.position, graph.tokens[graph.position])
        edges = graph.edges.copy()
        edges.insert(2, "source_token", [graph.tokens[p] for p in edges.source_position])
        edges["weight"] = edges.weight.round(4)
        _print(edges, args.format)
        return
    d = decompose(session, args.prompt, layer, args.position, target=args.target, other=args.other)
    log.warning("Layer %d, position %d (%r); target %r (logit %.4f)%s. %s", d.layer, d.position, d.token, d.target,
                d.logit, "" if d.other is None else f", other {d.other!r} (logit {d.logit_other:.4f})", d.note)
    frame = d.parts(heads=args.heads).drop(columns=["whole", "fine"])
    frame.insert(0, "layer", d.layer)
    frame.insert(1, "position", d.position)
    frame.insert(2, "target", d.target)
    _print(frame, args.format)


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``contributions``."""
    p = sub.add_parser("contributions", help="what wrote the residual at one cell, with direct logit attribution "
                                             "(or --graph: the contribution graph into it)")
    add_model(p, "'bundled', a hub id, a local folder; prefix 'random:'")
    p.add_argument("--prompt", required=True)
    p.add_argument("--layer", type=int, default=None,
                   help="residual layer: 0 = embeddings, l = after block l (default: the last)")
    p.add_argument("--position", type=int, default=-1, help="token position, negative from the end (default -1)")
    p.add_argument("--target", default=None, help="target token text, e.g. ' Paris' (default: the final top-1)")
    p.add_argument("--other", default=None, help="a second token: adds its DLA and the logit difference")
    p.add_argument("--heads", action="store_true", help="split each block's attention into heads + output bias")
    p.add_argument("--graph", action="store_true", help="print the contribution graph's edges instead")
    p.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                   help=f"graph: keep edges of at least this weight (default {DEFAULT_THRESHOLD})")
    p.add_argument("--format", choices=FORMATS, default="table")
    p.set_defaults(func=cmd_contributions)
