"""Chat prompts, the BOS rule and generation on the real bundled model (SmolLM2-135M-Instruct, which has a chat
template), and the ``generate`` / ``lens --chat`` commands."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from numerics import assert_same_greedy, assert_top1_within_ties

from core.analyses.generation import generate, stop_ids
from core.analyses.lens import run_lens
from core.model.executors import Pass
from core.model.prompts import chat_prompt, encode, has_chat_template, special_ids, token_table
from core.model.session import ModelSession

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
HI = (f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
"""What SmolLM2's own template writes for "Hi" (its default system turn first)."""


def test_the_bundled_template_wraps_hi(bundled_session: ModelSession) -> None:
    tok = bundled_session.tokenizer
    assert has_chat_template(tok)
    assert chat_prompt(tok, "Hi") == HI
    assert chat_prompt(tok, "Hi", system="Be brief.") == \
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    table = token_table(bundled_session, bundled_session.tokenize(HI))
    markers = table[table.token.isin(["<|im_start|>", "<|im_end|>"])]
    assert len(markers) == 5 and markers.special.all()  # 3 turns open; all but the assistant's close
    assert set(table[table.special].token) == {"<|im_start|>", "<|im_end|>"}
    assert table.token.iloc[:2].tolist() == ["<|im_start|>", "system"] and table.token.iloc[-1] == "\\n"
    assert {tok.bos_token_id, tok.eos_token_id} <= special_ids(tok)


def test_no_double_bos_and_plain_prompts_unchanged(bundled_session: ModelSession) -> None:
    tok = bundled_session.tokenizer
    ids = bundled_session.tokenize(HI).tolist()
    assert ids[0] == tok.bos_token_id and ids[1] != tok.bos_token_id  # the template's BOS text, once
    assert ids == tok(HI).input_ids  # SmolLM2's tokenizer adds no BOS of its own: the rule changes nothing here
    for text in ("The capital of France is", " Paris", "a\n\nb"):
        assert bundled_session.tokenize(text).tolist() == tok(text).input_ids == encode(tok, text)


def test_greedy_chat_answer_matches_hf_generate(bundled_session: ModelSession) -> None:
    prompt = chat_prompt(bundled_session.tokenizer, "What is the capital of France?")
    gen = generate(bundled_session, prompt, 24)
    assert "Paris" in gen.text
    assert gen.stopped == "eos" and gen.text.endswith("<|im_end|>")  # the assistant ends its turn
    ids = bundled_session.tokenize(prompt)
    with torch.no_grad():
        hf = bundled_session.model.generate(ids[None], attention_mask=torch.ones_like(ids)[None], max_new_tokens=24,
                                            do_sample=False, eos_token_id=sorted(stop_ids(bundled_session)),
                                            pad_token_id=bundled_session.tokenizer.pad_token_id)
    def reference(prefix: torch.Tensor) -> torch.Tensor:
        return bundled_session.run(Pass(prefix[None], logits=True)).logits[0]

    assert_same_greedy(hf[0], gen.ids, reference)  # another library's decoding: equal up to near-ties
    trace = bundled_session.trace(gen.ids)  # the lens over the generation reads its ids
    result = run_lens(bundled_session, "", trace=trace, top_k=3, layers=[bundled_session.adapter.n_layers],
                      positions=[gen.n_prompt - 1])
    after_prompt = reference(gen.ids[:gen.n_prompt])[None]  # [1, vocab]
    assert_top1_within_ties(result.stats.top_ids[0, 0, :1], after_prompt)  # the lens: the model
    assert_top1_within_ties(gen.ids[gen.n_prompt:gen.n_prompt + 1], after_prompt)  # what greedy decoding chose


def _cli(*args: str) -> subprocess.CompletedProcess:
    """``python -m core`` with the ``generate`` subcommand registered (the lead adds it to MODULES)."""
    code = ("import sys; from core.cli import main as m, generate; "
            "m.MODULES = tuple(dict.fromkeys(m.MODULES + (generate,))); sys.exit(m.main(sys.argv[1:]))")
    return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def test_generate_command() -> None:
    out = _cli("generate", "--prompt", "What is the capital of France?", "--chat", "-n", "24", "--format", "json")
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert "Paris" in got["continuation"] and got["stopped"] == "eos"
    assert got["prompt"].startswith("<|im_start|>system")
    tokens = got["tokens"]
    assert [t["position"] for t in tokens] == list(range(len(tokens)))
    assert sum(t["generated"] for t in tokens) == len(tokens) - got["n_prompt"]
    assert tokens[0]["special"] and tokens[0]["token"] == "<|im_start|>"
    bad = _cli("generate", "--prompt", "x", "-n", "257")
    assert bad.returncode == 2 and "-n must be in 1..256" in bad.stderr


def test_lens_command_with_chat() -> None:
    out = _cli("lens", "--prompt", "Hi", "--chat", "--top-k", "1", "--format", "csv")
    assert out.returncode == 0, out.stderr
    assert "<|im_start|>" in out.stdout and "assistant" in out.stdout
