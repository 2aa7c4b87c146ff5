"""`python -m core topics ...`: a neuron's superposed topics, a block scan, or real vs random.

    python -m core topics --model bundled --mode hi-c --layer 13 --neuron 5 --format json
    python -m core topics --mode hi-c --layer 13 --scan --format csv          # every unit of the block
    python -m core topics --mode hi-c --layer 13 --compare 20 --table tests   # real vs random baseline

``--layer`` is block l, 1-based (block l writes layer l; core/layers.py): Hi modes read the MLP of that block,
Lo modes inject the residual dimension into the stream entering it. The same neuron is ``--blocks l`` in
``python -m core attention-mlp`` and block l in its tables.
"""

from __future__ import annotations

import argparse
import logging
from typing import TYPE_CHECKING

from core import validate
from core.analyses.topics.params import (
    COMPARE_TABLES,
    DEFAULT_MODE,
    MAX_TOPIC_K,
    MODES,
    PAPER_SIZE_LIMITS,
    PAPER_THRESHOLDS,
    UNIT_TABLES,
    TopicParams,
    check_limits,
)
from core.cli.common import Bar, add_format, add_model, check_model, check_sizes, default_of, load_session, print_frame

if TYPE_CHECKING:
    from core.validate import ModelDims

log = logging.getLogger("layerscope")
TABLES = UNIT_TABLES  # one unit's tables; --compare prints COMPARE_TABLES
# Settings left at None take the analysis's defaults (TopicParams): the same parameters and cache keys as the page.
MAX_COUNT = 1_000_000_000  # --min-freq and --size-limits: beyond any corpus here (and within numpy's int64)
BOUNDS = {"tau": (1, 1_000_000), "min_freq": (1, MAX_COUNT), "vocab_size": (1, 10_000_000), "k": (2, MAX_TOPIC_K),
          "time_limit": (0.0, 86_400.0, True), "seed": (0, 2**63 - 1), "random": (0, 2**63 - 1),
          "compare": (0, None), "layer": (1, None), "neuron": (0, None)}


def _params(args: argparse.Namespace) -> TopicParams:
    """The pipeline's settings: the ones given, the analysis's defaults for the rest, checked by its rules."""
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
    if args.compare and args.table not in COMPARE_TABLES + (TABLES[0],):  # the default table: not given
        raise ValueError(f"Unknown table {args.table!r} for --compare; choose from {', '.join(COMPARE_TABLES)}.")
    if not (args.scan or args.compare):
        if args.neuron is None:
            raise ValueError("Give --neuron N (or --scan for the whole block, --compare N for real vs random).")
        if args.table not in TABLES:
            raise ValueError(f"Unknown table {args.table!r} for one neuron; choose from {', '.join(TABLES)}.")
    if args.thresholds is not None or args.size_limits is not None:
        check_limits(tuple(args.thresholds or PAPER_THRESHOLDS), tuple(args.size_limits or PAPER_SIZE_LIMITS))
        for limit in args.size_limits or ():
            validate.int_range("--size-limits", limit, 1, MAX_COUNT)
    _check_unit(args, check_model(args.model))
    if args.corpus not in ("", "wikipedia", "bundled"):
        validate.text_folder(args.corpus)  # at once, before scipy loads
        # after the checks: torch and the analysis load only for valid input
        from core.analyses.topics.corpus import folder_documents

        folder_documents(args.corpus)  # the analysis's own reading: enough words to count


def cmd_topics(args: argparse.Namespace) -> None:
    check_args(args)
    # after the checks: torch and the analysis load only for valid input
    from core.analyses.topics.cached_runs import compare_random, prepare, scan_layer, unit_result
    from core.analyses.topics.vocab import check_unit
    from core.layers import block_of_layer  # after the checks: torch and the analysis load only for valid input

    params = _params(args)
    session = load_session(args.model)
    block = args.layer  # 1-based, as the analysis takes it (core.analyses.topics.cached_runs converts once)
    check_unit(session, args.mode, block_of_layer(block), None if (args.scan or args.compare) else args.neuron)
    bar = Bar("reference corpus")
    ref = prepare(session, params, bar)
    bar.close()
    log.info("%s", ref.counts.describe())
    if args.scan:
        bar = Bar(f"scanning block {args.layer}")
        frame = scan_layer(session, ref, args.mode, block, params, bar)
        bar.close()
        print_frame(frame, args.format)
        return
    if args.compare:
        table = args.table if args.table in COMPARE_TABLES else "tests"
        bar = Bar(f"real vs random, {args.compare} units")
        frames = compare_random(session, ref, args.mode, block, args.compare, args.seed, params, bar)
        bar.close()
        if table == "verdicts":  # the page's verdicts: each claim with its n, 95 % interval and wording
            import pandas as pd

            from core.analyses.topics.verdicts import compare_verdicts

            print_frame(pd.DataFrame(compare_verdicts(frames, params.size_limits, params.k)), args.format)
            return
        print_frame(frames[table], args.format)
        return
    result = unit_result(session, ref, args.mode, block, args.neuron, params, args.random)
    for note in result.notes:
        log.warning("%s", note)
    print_frame(getattr(result, args.table), args.format)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``topics`` subcommand."""
    p = sub.add_parser("topics", help="neurons as superposed topic models (Lim & Lauw 2023)")
    add_model(p)
    p.add_argument("--mode", choices=tuple(MODES), default=DEFAULT_MODE)
    p.add_argument("--layer", type=int, required=True,
                   help="block l (1-based; writes layer l): hi modes read its MLP, lo modes the stream entering it")
    p.add_argument("--neuron", type=int, default=None, help="MLP neuron (hi modes) or residual dimension (lo)")
    p.add_argument("--random", type=int, default=None, metavar="SEED",
                   help="the random baseline: a seeded vocabulary permutation in place of the neuron's logits")
    p.add_argument("--scan", action="store_true", help="every unit of the block: pools and star sets")
    p.add_argument("--compare", type=int, default=0, metavar="N", help="N random units vs the random baseline")
    p.add_argument("--seed", type=int, default=0, help="sample seed of --compare")
    # None = the analysis's default (TopicParams), quoted in the help
    p.add_argument("--tau", type=int, default=None,
                   help=f"top and bottom tokens per pool (default {default_of(TopicParams, 'tau')})")
    p.add_argument("--min-freq", type=int, default=None,
                   help=f"minimum window count (word and pair; default {default_of(TopicParams, 'min_freq')})")
    p.add_argument("--vocab-size", type=int, default=None,
                   help=f"corpus vocabulary (default {default_of(TopicParams, 'vocab_size')})")
    p.add_argument("--corpus", default=default_of(TopicParams, "corpus"),
                   help="'wikipedia' (bundled) or a folder of .txt files")
    p.add_argument("--thresholds", type=float, nargs=2, default=None, metavar=("LO", "HI"),
                   help="NPMI edge thresholds (default: the paper's {} {})".format(*PAPER_THRESHOLDS))
    p.add_argument("--size-limits", type=int, nargs=2, default=None, metavar=("LO", "HI"),
                   help="star-set sizes (default: the paper's {} {})".format(*PAPER_SIZE_LIMITS))
    p.add_argument("--k", type=int, default=None, help=f"words per topic (default {default_of(TopicParams, 'k')})")
    p.add_argument("--time-limit", type=float, default=None,
                   help=f"seconds per integer program (default {default_of(TopicParams, 'time_limit'):g})")
    p.add_argument("--table", default=TABLES[0],
                   help=f"one neuron: {TABLES[0]} (default), {', '.join(TABLES[1:])}; --compare: "
                        f"{', '.join(COMPARE_TABLES)}")
    add_format(p)
    p.set_defaults(func=cmd_topics)
