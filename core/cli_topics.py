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

from core.cli_util import Bar, load_session, print_frame

log = logging.getLogger("layerscope")
TABLES = ("sets", "pools", "edges", "summary")
COMPARE_TABLES = ("tests", "rows", "topics")


def _params(args: argparse.Namespace):
    from core.analyses.topics import TopicParams

    return TopicParams(tau=args.tau, min_freq=args.min_freq, thresholds=tuple(args.thresholds),
                       size_limits=tuple(args.size_limits), k=args.k, time_limit=args.time_limit,
                       corpus=args.corpus, vocab_size=args.vocab_size).check()


def cmd_topics(args: argparse.Namespace) -> None:
    from core.analyses.topics_tasks import compare_random, prepare, scan_layer, unit_result
    from core.analyses.topics_vocab import check_unit

    params = _params(args)
    if args.compare and args.table not in COMPARE_TABLES + ("sets",):
        raise ValueError(f"Unknown table {args.table!r} for --compare; choose from {', '.join(COMPARE_TABLES)}.")
    if not (args.scan or args.compare):
        if args.neuron is None:
            raise ValueError("Give --neuron N (or --scan for the whole block, --compare N for real vs random).")
        if args.table not in TABLES:
            raise ValueError(f"Unknown table {args.table!r} for one neuron; choose from {', '.join(TABLES)}.")
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
    from core.analyses.topics_corpus import DEFAULT_MIN_FREQ, DEFAULT_VOCAB_SIZE
    from core.analyses.topics_solve import DEFAULT_TIME_LIMIT, PAPER_SIZE_LIMITS, PAPER_THRESHOLDS, TOPIC_K
    from core.analyses.topics_vocab import DEFAULT_TAU, MODES

    p = sub.add_parser("topics", help="neurons as superposed topic models (Lim & Lauw 2023)")
    p.add_argument("--model", default="bundled")
    p.add_argument("--mode", choices=tuple(MODES), default="hi-c")
    p.add_argument("--layer", type=int, required=True, help="block number 1..L (MLP of block L for hi modes)")
    p.add_argument("--neuron", type=int, default=None, help="MLP neuron (hi modes) or residual dimension (lo)")
    p.add_argument("--random", type=int, default=None, metavar="SEED",
                   help="the random baseline: a seeded vocabulary permutation in place of the neuron's logits")
    p.add_argument("--scan", action="store_true", help="every unit of the block: pools and star sets")
    p.add_argument("--compare", type=int, default=0, metavar="N", help="N random units vs the random baseline")
    p.add_argument("--seed", type=int, default=0, help="sample seed of --compare")
    p.add_argument("--tau", type=int, default=DEFAULT_TAU)
    p.add_argument("--min-freq", type=int, default=DEFAULT_MIN_FREQ, help="minimum window count (word and pair)")
    p.add_argument("--vocab-size", type=int, default=DEFAULT_VOCAB_SIZE)
    p.add_argument("--corpus", default="wikipedia", help="'wikipedia' (bundled) or a folder of .txt files")
    p.add_argument("--thresholds", type=float, nargs=2, default=list(PAPER_THRESHOLDS), metavar=("LO", "HI"))
    p.add_argument("--size-limits", type=int, nargs=2, default=list(PAPER_SIZE_LIMITS), metavar=("LO", "HI"))
    p.add_argument("--k", type=int, default=TOPIC_K, help="words per topic")
    p.add_argument("--time-limit", type=float, default=DEFAULT_TIME_LIMIT, help="seconds per integer program")
    p.add_argument("--table", default="sets",
                   help="one neuron: sets (default), pools, edges, summary; --compare: tests, rows, topics")
    p.add_argument("--format", choices=("json", "csv"), default="json")
    p.set_defaults(func=cmd_topics)
