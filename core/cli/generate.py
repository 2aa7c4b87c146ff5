"""`python -m core generate`: the model's continuation of a prompt (greedy, or sampled with a seed), and the exact
token table of prompt and continuation.

    python -m core generate --prompt "The capital of France is" -n 20
    python -m core generate --prompt "What is the capital of France?" --chat --sample --seed 1 --format json

Also :func:`add_chat` / :func:`chat_text`: the ``--chat`` flag other subcommands (``lens``) share.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from core import validate
from core.analyses.params import DEFAULT_NEW_TOKENS, MAX_NEW_TOKENS, MAX_TEMPERATURE
from core.cli.common import add_model, check_model, check_sizes, load_session, log

if TYPE_CHECKING:
    from core.model.session import ModelSession

FORMATS = ("table", "csv", "json")


def add_chat(parser: argparse.ArgumentParser) -> None:
    """``--chat``: wrap the prompt as a user turn with the model's chat template (the sidebar's toggle)."""
    parser.add_argument("--chat", action="store_true",
                        help="wrap --prompt as a user turn with the model's chat template, followed by the "
                             "assistant's header (models with a chat template only)")


def chat_text(session: "ModelSession", text: str, chat: bool) -> str:
    """``text``, wrapped as a chat turn when ``chat`` (ValueError for a model without a chat template)."""
    if not chat:
        return text
    from core.model.prompts import chat_prompt

    return chat_prompt(session.tokenizer, text)


def cmd_generate(args: argparse.Namespace) -> None:
    check_model(args.model)
    validate.int_range("-n", args.n, 1, MAX_NEW_TOKENS)
    check_sizes(args, {"seed": (0, validate.MAX_SEED), "top_k": (0, validate.model_vocab(args.model))})
    if not args.temperature > 0:
        raise ValueError(f"--temperature must be above 0 (got {args.temperature:g}).")
    validate.number_range("--temperature", args.temperature, 0.0, MAX_TEMPERATURE, lo_open=True)
    if not args.prompt.strip():
        raise ValueError("--prompt is empty: give the text to continue.")
    from core.analyses.generation import generate, generation_table  # torch: only once the input is checked

    session = load_session(args.model)
    prompt = chat_text(session, args.prompt, args.chat)
    gen = generate(session, prompt, args.n, sample=args.sample, seed=args.seed, temperature=args.temperature,
                   top_k=args.top_k)
    table = generation_table(session, gen)
    if args.format == "json":
        json.dump({"prompt": prompt, "continuation": gen.text, "stopped": gen.stopped, "n_prompt": gen.n_prompt,
                   "tokens": json.loads(table.to_json(orient="records", force_ascii=False))},
                  sys.stdout, ensure_ascii=False, indent=1)
        sys.stdout.write("\n")
    elif args.format == "csv":
        log.warning("continuation (%s): %r", gen.stopped, gen.text)  # stdout holds the token table only
        table.to_csv(sys.stdout, index=False)
    else:
        sys.stdout.write(f"{gen.text}\n\n(stopped: {gen.stopped}; {gen.n_prompt} prompt + {gen.n_new} new tokens)\n\n")
        sys.stdout.write(table.to_string(index=False) + "\n")


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``generate``."""
    gen = sub.add_parser("generate", help="continue a prompt (greedy or seeded sampling) and list its tokens")
    add_model(gen, "'bundled', a hub id, a local folder; prefix 'random:'")
    gen.add_argument("--prompt", required=True)
    gen.add_argument("-n", "--max-new-tokens", dest="n", type=int, default=DEFAULT_NEW_TOKENS,
                     help=f"new tokens at most (1..{MAX_NEW_TOKENS}; decoding stops earlier at end-of-sequence)")
    gen.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    gen.add_argument("--seed", type=int, default=0, help="seed of the sampling (the same seed, the same text)")
    gen.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (> 0)")
    gen.add_argument("--top-k", type=int, default=0, help="sample among the k most likely tokens (0: all)")
    add_chat(gen)
    gen.add_argument("--format", choices=FORMATS, default=FORMATS[0],
                     help="table: the continuation, then the token table; csv: the token table (the continuation "
                          "on stderr); json: both")
    gen.set_defaults(func=cmd_generate)
