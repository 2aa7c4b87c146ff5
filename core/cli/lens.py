"""`python -m core lens`: the logit lens table over every layer x position of a prompt."""

from __future__ import annotations

import argparse

from core.analyses.params import DEFAULT_TOP_K, MAX_TOP_K
from core.cli.common import add_format, add_model, check_model, check_sizes, load_session, log, print_frame
from core.cli.generate import add_chat, chat_text

# Every subcommand checks its input first (files, sizes, names; layers and neurons from config.json), before
# torch, a model, a lens or a corpus pass is touched; names, bounds and defaults come from the analyses'
# torch-free params modules.


def cmd_lens(args: argparse.Namespace) -> None:
    check_model(args.model, remote_ok=True)
    check_sizes(args, {"top_k": (1, MAX_TOP_K)})
    if not args.prompt.strip():
        raise ValueError("--prompt is empty: give the text to analyse.")
    if args.target == "":
        raise ValueError("--target is empty: type a token such as ' Paris' (mind the leading space), or leave it out "
                         "for the final top-1.")
    from core.analyses.lens import run_lens  # torch: only once the input is checked

    session = load_session(args.model)
    prompt = chat_text(session, args.prompt, args.chat)  # --chat: the prompt as a user turn
    result = run_lens(session, prompt, top_k=args.top_k, targets=[args.target] if args.target else None)
    for note in result.notes:
        log.warning("%s", note)
    if session.remote:
        traffic = session.executor.traffic
        log.info("NDIF: sent %s bytes, received %s bytes (the lens statistics only)", traffic.request_bytes,
                 traffic.result_bytes)
    print_frame(result.frame, args.format)


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``lens``."""
    lens = sub.add_parser("lens", help="logit lens over every layer x position of a prompt")
    add_model(lens, "'bundled', a hub id, a local folder; prefix 'random:'")
    lens.add_argument("--prompt", required=True)
    lens.add_argument("--top-k", type=int, default=DEFAULT_TOP_K)
    lens.add_argument("--target", default=None, help="target token text, e.g. ' Paris' (default: final top-1)")
    add_chat(lens)
    add_format(lens)
    lens.set_defaults(func=cmd_lens)
