"""Generation: the model's own continuation of a prompt, one token per forward pass, for the lens to read.

``generate(session, prompt, n)`` runs every pass through :meth:`core.model.session.ModelSession.run` (the session's
executor and lock). With an executor that hands a key/value cache on (``executor.kv_cache``: the local one) the
prompt runs once with ``keep_cache`` and each new token is one pass of that token over the cache. An executor that
cannot (nnsight, here or on NDIF) runs the whole sequence at every step instead: the same tokens within float32
rounding, slower (on NDIF one request per token). Greedy decoding takes the argmax of the last position's logits;
sampling draws from ``softmax(logits / temperature)`` (optionally only the ``top_k`` most likely tokens) with a
``torch.Generator`` seeded by ``seed``, on the CPU, so a seed gives the same continuation on every run. Decoding stops
at the model's end-of-sequence token (kept as the last token) or after ``max_new_tokens``.

The lens over a generation: ``session.trace(gen.ids)`` (a trace of the prompt and continuation ids as generated, not
re-tokenized text).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import pandas as pd
import torch

from core.analyses.params import DEFAULT_NEW_TOKENS, MAX_NEW_TOKENS  # noqa: F401 (re-exported)
from core.model.executors import Pass
from core.model.prompts import token_table
from core.model.session import ModelSession



@dataclass(frozen=True)
class Generation:
    """A prompt and its continuation.

    prompt_ids  [n_prompt] the prompt's ids
    ids         [n_prompt + n_new] prompt and continuation (the end-of-sequence token, when it stopped there,
                included)
    tokens      the decoded text of every id of ``ids``
    text        the continuation's decoded text (special tokens included), so that prompt text + text reads as
                ``ids`` do
    stopped     "eos" (the model ended its turn) or "length" (``max_new_tokens`` reached)
    """

    prompt_ids: torch.Tensor
    ids: torch.Tensor
    n_prompt: int
    tokens: tuple[str, ...]
    text: str
    stopped: str

    @property
    def new_ids(self) -> torch.Tensor:
        """[n_new] the continuation's ids."""
        return self.ids[self.n_prompt:]

    @property
    def n_new(self) -> int:
        return int(self.ids.numel()) - self.n_prompt


def stop_ids(session: ModelSession) -> set[int]:
    """The end-of-sequence ids decoding stops at: the model's generation config's and the tokenizer's."""
    found: set[int] = set()
    config = getattr(session.model, "generation_config", None)
    for value in (getattr(config, "eos_token_id", None), getattr(session.tokenizer, "eos_token_id", None)):
        if value is None:
            continue
        found.update(int(v) for v in (value if isinstance(value, (list, tuple)) else [value]))
    return found


def check_request(session: ModelSession, n_prompt: int, max_new_tokens: int, temperature: float = 1.0,
                  top_k: int = 0, seed: int = 0) -> None:
    """ValueError, before any pass, for sizes out of range: 1 <= max_new_tokens <= MAX_NEW_TOKENS, the prompt plus
    the continuation within the model's context, temperature > 0, 0 <= top_k <= vocabulary, seed >= 0."""
    if isinstance(max_new_tokens, bool) or int(max_new_tokens) != max_new_tokens \
            or not 1 <= int(max_new_tokens) <= MAX_NEW_TOKENS:
        raise ValueError(f"The number of new tokens must be a whole number from 1 to {MAX_NEW_TOKENS}; "
                         f"got {max_new_tokens}.")
    room = session.max_tokens - n_prompt
    if int(max_new_tokens) > room:
        raise ValueError(f"The prompt is {n_prompt} tokens and this model reads at most {session.max_tokens}: "
                         f"at most {max(room, 0)} new tokens fit (asked for {int(max_new_tokens)}). Shorten the "
                         "prompt or ask for fewer tokens.")
    if not float(temperature) > 0:
        raise ValueError(f"The temperature must be above 0; got {temperature}.")
    if int(top_k) != top_k or not 0 <= int(top_k) <= session.adapter.d_vocab:
        raise ValueError(f"Top-k must be a whole number from 0 (off) to {session.adapter.d_vocab}; got {top_k}.")
    if int(seed) != seed or int(seed) < 0:
        raise ValueError(f"The seed must be a whole number >= 0; got {seed}.")


def _next_token(logits: torch.Tensor, sample: bool, generator: torch.Generator | None, temperature: float,
                top_k: int) -> int:
    """[vocab] float32 logits -> the next id: argmax, or a seeded draw (on the CPU)."""
    if not sample:
        return int(logits.argmax())
    scaled = logits.detach().float().cpu() / float(temperature)
    if top_k:
        cut = torch.topk(scaled, int(top_k)).values[-1]
        scaled = scaled.masked_fill(scaled < cut, float("-inf"))
    probs = torch.softmax(scaled, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))


def _prompt_ids(session: ModelSession, prompt: str | torch.Tensor | Sequence[int]) -> torch.Tensor:
    if isinstance(prompt, str):
        return session.tokenize(prompt)
    ids = prompt if isinstance(prompt, torch.Tensor) else torch.tensor(list(prompt), dtype=torch.long)
    return session._check_ids(ids.long())


def continuation_text(session: ModelSession, prompt_ids: torch.Tensor, ids: torch.Tensor) -> str:
    """The continuation's text: what decoding ``ids`` adds to decoding ``prompt_ids`` (so a leading space that a
    tokenizer drops when decoding a piece on its own is kept), special tokens included."""
    decode = session.tokenizer.decode
    whole, head = decode(ids.tolist()), decode(prompt_ids.tolist())
    if whole.startswith(head):
        return whole[len(head):]
    return decode(ids[prompt_ids.numel():].tolist())


def generate(session: ModelSession, prompt: str | torch.Tensor | Sequence[int],
             max_new_tokens: int = DEFAULT_NEW_TOKENS, sample: bool = False, seed: int = 0, temperature: float = 1.0,
             top_k: int = 0, use_cache: bool = True, progress: Callable[[float], None] | None = None) -> Generation:
    """Continue ``prompt`` (text, tokenized by ``session.tokenize``, or [pos] ids) by up to ``max_new_tokens``
    tokens: greedy (argmax) or, with ``sample``, drawn with ``seed`` at ``temperature`` among the ``top_k`` most
    likely (0: all). Stops at end-of-sequence. ``use_cache=False`` recomputes the whole sequence at every step (what
    executors without a key/value cache always do). ``progress(fraction)`` after each token. ValueError for sizes out
    of range (:func:`check_request`) before any pass."""
    prompt_ids = _prompt_ids(session, prompt).cpu()
    n_prompt = int(prompt_ids.numel())
    check_request(session, n_prompt, max_new_tokens, temperature, top_k, seed)
    sample = bool(sample)
    generator = torch.Generator().manual_seed(int(seed)) if sample else None
    stops = stop_ids(session)
    cached = use_cache and bool(getattr(session.executor, "kv_cache", False))
    new: list[int] = []
    stopped = "length"
    out = session.run(Pass(prompt_ids[None], logits=True, keep_cache=cached))
    for step in range(int(max_new_tokens)):
        token = _next_token(out.logits[0], sample, generator, temperature, top_k)
        new.append(token)
        if progress is not None:
            progress((step + 1) / int(max_new_tokens))
        if token in stops:
            stopped = "eos"
            break
        if step + 1 == int(max_new_tokens):
            break
        if cached:
            out = session.run(Pass(torch.tensor([[token]]), logits=True, past_key_values=out.past_key_values,
                                   keep_cache=True))
        else:
            ids = torch.cat([prompt_ids, torch.tensor(new, dtype=torch.long)])
            out = session.run(Pass(ids[None], logits=True))
    ids = torch.cat([prompt_ids, torch.tensor(new, dtype=torch.long)])
    return Generation(prompt_ids=prompt_ids, ids=ids, n_prompt=n_prompt, tokens=session.token_strings(ids),
                      text=continuation_text(session, prompt_ids, ids), stopped=stopped)


def generation_table(session: ModelSession, gen: Generation) -> pd.DataFrame:
    """The token table (:func:`core.model.prompts.token_table`) of prompt and continuation, with ``generated``
    marking the continuation's positions."""
    table = token_table(session, gen.ids)
    table["generated"] = table.position >= gen.n_prompt
    return table
