"""`python -m core topics ...`: a neuron's superposed topics, a block scan, or real vs random.

    python -m core topics --model bundled --mode hi-c --layer 13 --neuron 5 --format json
    python -m core topics --mode hi-c --layer 13 --scan --format csv          # every unit of the block
    python -m core topics --mode hi-c --layer 13 --compare 20 --table tests   # real vs random baseline

``--layer`` is the 1-based block number (the app's labels: block outputs 1..L): Hi modes read the MLP of
that block, Lo modes inject the residual dimension into the stream entering it.
"""

from __future__ import annotations

import argparse
import logging
from typing import TYPE_CHECKING

from core import validate
from core.cli.common import Bar, check_model, check_sizes, load_session, print_frame

if TYPE_CHECKING:
    from core.analyses.topics.neuron import TopicParams
    from core.validate import ModelDims

log = logging.getLogger("layerscope")
TABLES = ("sets", "pools", "edges", "summary")
COMPARE_TABLES = ("tests", "rows", "topics")
# core.analyses.topics.vocab.MODES (which needs torch), mirrored so a bad --mode fails at once; kept equal by
# tests/unit/test_cli_validation.py. Settings left at None take the analysis's defaults (TopicParams).
MODE_NAMES = ("hi-c", "hi-i", "lo-c", "lo-i")
BOUNDS = {"tau": (1, 1_000_000), "min_freq": (1, None), "vocab_size": (1, 10_000_000), "k": (2, 50),
          "time_limit": (0.0, 86_400.0, True), "seed": (0, 2**63 - 1), "random": (0, 2**63 - 1),
          "compare": (0, None), "layer": (1, None), "neuron": (0, None)}


def _params(args: argparse.Namespace) -> "TopicParams":
    """The pipeline's settings: the ones given, the analysis's defaults for the rest, checked by its rules."""
    from core.analyses.topics.neuron import TopicParams

    given = {"tau": args.tau, "min_freq": args.min_freq, "k": args.k, "time_limit": args.time_limit,
             "vocab_size": args.vocab_size, "thresholds": args.thresholds and tuple(args.thresholds),
             "size_limits": args.size_limits and tuple(args.size_limits)}
    return TopicParams(corpus=args.corpus, **{k: v for k, v in given.items() if v is not None}).check()


def _check_unit(args: argparse.Namespace, dims: "ModelDims | None") -> None:
    """--layer and --neuron against the model's config.json (when this machine has it)."""
    if dims is None:
        return
    validate.block("--layer", args.layer, dims.n_layers, first=1)
    hi = args.mode.startswith("hi")
    n_units = dims.d_mlp if hi else dims.d_model
    if n_units is None:
        return
    if args.neuron is not None and not (args.scan or args.compare):
        validate.unit("--neuron", args.neuron, n_units, "MLP neurons" if hi else "residual dimensions")
    if args.compare:
        validate.int_range("--compare", args.compare, 1, n_units)


def check_args(args: argparse.Namespace) -> None:
    """Everything ``topics`` is given, before torch or the model loads (the corpus folder is read once)."""
    check_sizes(args, BOUNDS)
    if args.compare and args.table not in COMPARE_TABLES + ("sets",):
        raise ValueError(f"Unknown table {args.table!r} for --compare; choose from {', '.join(COMPARE_TABLES)}.")
    if not (args.scan or args.compare):
        if args.neuron is None:
            raise ValueError("Give --neuron N (or --scan for the whole block, --compare N for real vs random).")
        if args.table not in TABLES:
            raise ValueError(f"Unknown table {args.table!r} for one neuron; choose from {', '.join(TABLES)}.")
    if args.thresholds is not None or args.size_limits is not None:
        from core.analyses.topics.word_sets import PAPER_SIZE_LIMITS, PAPER_THRESHOLDS, check_limits

        check_limits(tuple(args.thresholds or PAPER_THRESHOLDS), tuple(args.size_limits or PAPER_SIZE_LIMITS))
    _check_unit(args, check_model(args.model))
    if args.corpus not in ("", "wikipedia", "bundled"):
        validate.text_folder(args.corpus)  # at once, before scipy loads
        from core.analyses.topics.corpus import folder_documents

        folder_documents(args.corpus)  # the analysis's own reading: enough words to count


def cmd_topics(args: argparse.Namespace) -> None:
    check_args(args)
    from core.analyses.topics.cached_runs import compare_random, prepare, scan_layer, unit_result
    from core.analyses.topics.vocab import check_unit

    params = _params(args)
    session = load_session(args.model)
    layer = args.layer - 1
    check_unit(session, args.mode, layer, None if (args.scan or args.compare) else args.neuron)
    bar = Bar("reference corpus")
    ref = prepare(session, params, bar)
    bar.close()
    log.info("%s", ref.counts.describe())
    if args.scan:
        bar = Bar(f"scanning block {args.layer}")
        frame = scan_layer(session, ref, args.mode, layer, params, bar)
        bar.close()
        print_frame(frame, args.format)
        return
    if args.compare:
        table = args.table if args.table in COMPARE_TABLES else "tests"
        bar = Bar(f"real vs random, {args.compare} units")
        frames = compare_random(session, ref, args.mode, layer, args.compare, args.seed, params, bar)
        bar.close()
        print_frame(frames[table], args.format)
        return
    result = unit_result(session, ref, args.mode, layer, args.neuron, params, args.random)
    for note in result.notes:
        log.warning("%s", note)
    print_frame(getattr(result, args.table), args.format)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``topics`` subcommand."""
    p = sub.add_parser("topics", help="neurons as superposed topic models (Lim & Lauw 2023)")
    p.add_argument("--model", default="bundled")
    p.add_argument("--mode", choices=MODE_NAMES, default="hi-c")
    p.add_argument("--layer", type=int, required=True, help="block number 1..L (MLP of block L for hi modes)")
    p.add_argument("--neuron", type=int, default=None, help="MLP neuron (hi modes) or residual dimension (lo)")
    p.add_argument("--random", type=int, default=None, metavar="SEED",
                   help="the random baseline: a seeded vocabulary permutation in place of the neuron's logits")
    p.add_argument("--scan", action="store_true", help="every unit of the block: pools and star sets")
    p.add_argument("--compare", type=int, default=0, metavar="N", help="N random units vs the random baseline")
    p.add_argument("--seed", type=int, default=0, help="sample seed of --compare")
    p.add_argument("--tau", type=int, default=None, help="top and bottom tokens per pool (default 900)")
    p.add_argument("--min-freq", type=int, default=None, help="minimum window count (word and pair; default 10)")
    p.add_argument("--vocab-size", type=int, default=None, help="corpus vocabulary (default 40000)")
    p.add_argument("--corpus", default="wikipedia", help="'wikipedia' (bundled) or a folder of .txt files")
    p.add_argument("--thresholds", type=float, nargs=2, default=None, metavar=("LO", "HI"),
                   help="NPMI edge thresholds (default: the paper's 0.1 1.0)")
    p.add_argument("--size-limits", type=int, nargs=2, default=None, metavar=("LO", "HI"),
                   help="star-set sizes (default: the paper's 10 24)")
    p.add_argument("--k", type=int, default=None, help="words per topic (default 10)")
    p.add_argument("--time-limit", type=float, default=None, help="seconds per integer program (default 30)")
    p.add_argument("--table", default="sets",
                   help="one neuron: sets (default), pools, edges, summary; --compare: tests, rows, topics")
    p.add_argument("--format", choices=("json", "csv"), default="json")
    p.set_defaults(func=cmd_topics)
