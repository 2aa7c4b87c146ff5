"""Bad input is answered before long work starts: every ``python -m core`` subcommand checks its files, corpora,
sizes, layers and neurons first and ends with one ``error:`` line and exit status 2, in well under a second
of its own work (no torch import, no model, no lens training, no corpus pass); plus core/validate.py's checks
one by one, the CLI's defaults and names (the analyses' own) and bounds, and the pages' checks before a job starts.

Measured here (2 shared cores, a second engineer's work running): every bad-input command below took
0.11-0.41 s wall, Python start included (e.g. extraction --corpus /nonexistent.txt 0.30 s, --corpus /etc/passwd
0.33 s, lens --model /etc 0.26 s, topics --layer 31 0.21 s); a topics corpus folder with too few words, which
imports SciPy and reads the folder, 1.0 s. Python + torch import alone takes 4-5 s and loading the bundled
model 15-25 s, so the bound of 10 s proves none of that happened while leaving room for a loaded 2-core CI box.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core import validate

ROOT = Path(__file__).resolve().parents[2]
FAST_S = 10.0  # measured 0.1-0.9 s; torch import alone is 4-5 s, a model load 15-25 s
BUNDLED_CONFIG = ROOT / "cache" / "models" / validate.BUNDLED_DIR / "config.json"
TINY = {"model_type": "llama", "num_hidden_layers": 4, "hidden_size": 48, "intermediate_size": 96,
        "num_attention_heads": 4, "vocab_size": 400}


def run_cli(*args: str) -> tuple[subprocess.CompletedProcess, float]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "core", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    return done, time.monotonic() - start


def assert_refused(args: list[str], *words: str, bound: float = FAST_S) -> str:
    """Exit status 2, exactly one non-empty stderr line 'error: ...' naming ``words``, no traceback, fast."""
    done, seconds = run_cli(*args)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, (args, done.returncode, done.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("error: "), (args, done.stderr[-2000:])
    assert "Traceback" not in done.stderr and done.stdout == ""
    for word in words:
        assert word.lower() in lines[0].lower(), (word, lines[0])
    assert seconds < bound, f"{args} took {seconds:.1f} s"
    return lines[0]


@pytest.fixture
def tiny_model_dir(tmp_path: Path) -> Path:
    """A folder that passes the file checks (config.json + a weights file) with known sizes; never loaded."""
    folder = tmp_path / "tiny-llama"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(TINY))
    (folder / "model.safetensors").write_bytes(b"never read by the checks")
    return folder


# -- the commands ---------------------------------------------------------------------------------
@pytest.mark.parametrize("args, words", [
    (["extraction", "--corpus", "/nonexistent.txt"], ["no such corpus file", "/nonexistent.txt"]),
    (["extraction", "--corpus", "/etc/passwd"], ["/etc/passwd", ".txt", ".jsonl", ".csv"]),
    (["extraction", "--corpus", "no-such-corpus"], ["unknown corpus", "wikipedia", "lee"]),
    (["extraction", "--corpus", "/etc"], ["folder"]),
    (["extraction", "--methods", "logit,bogus"], ["--methods", "bogus"]),
    (["extraction", "--n", "0"], ["--n", "1..100000"]),
    (["lens", "--model", "/etc", "--prompt", "x"], ["/etc", "holds no model", "config.json"]),
    (["lens", "--model", "/nonexistent/folder", "--prompt", "x"], ["no such folder", "/nonexistent/folder"]),
    (["lens", "--model", "random:/nonexistent/folder", "--prompt", "x"], ["no such folder"]),
    (["lens", "--model", "/etc/passwd", "--prompt", "x"], ["is a file"]),
    (["lens", "--model", "/nonexistent/model.gguf", "--prompt", "x"], [".gguf"]),
    (["lens", "--model", "not a model id!", "--prompt", "x"], ["hub id"]),
    (["lens", "--prompt", "x", "--top-k", "0"], ["--top-k", "1..100"]),
    (["lens", "--prompt", "x", "--top-k", "1000"], ["--top-k"]),
    (["lens", "--prompt", "   "], ["--prompt"]),
    (["train-lens", "--kl-seconds", "-5"], ["--kl-seconds"]),
    (["train-lens", "--kl-seconds", "nan"], ["--kl-seconds", "finite"]),
    (["train-lens", "--tokens", "10"], ["--tokens"]),
    (["train-lens", "--model", "/etc"], ["holds no model"]),
    (["import-lens", "--dir", "/nonexistent/lens"], ["no lens folder"]),
    (["depth", "pos", "--n", "0"], ["--n"]),
    (["depth", "pos", "--table", "bogus"], ["bogus", "rows"]),
    (["depth", "all", "--table", "rows"], ["verdicts"]),
    (["depth", "pos", "--model", "/etc"], ["holds no model"]),
    (["topk", "saturation", "--n", "0"], ["--n"]),
    (["topk", "saturation", "--k", "1"], ["--k", "2..50"]),
    (["topk", "saturation", "--k", "51"], ["--k", "2..50"]),
    (["topk", "saturation", "--max-tokens", "4"], ["--max-tokens"]),
    (["topk", "saturation", "--ratio", "0"], ["--ratio"]),
    (["topk", "saturation", "--n-perm", "0"], ["--n-perm"]),
    (["topk", "probing", "--folds", "1"], ["--folds"]),
    (["topk", "probing", "--n-tasks", "9", "--k", "5"], ["--n-tasks", "2..5"]),
    (["topk", "probing", "--k", "3"], ["--n-tasks (default 4)", "2..3"]),
    (["topk", "early-exit", "--n-eval", "0"], ["--n-eval"]),
    (["topk", "saturation", "--table", "bogus"], ["bogus", "rank_order"]),
    (["topk", "intervention", "--n", "0"], ["--n"]),
    (["topk", "intervention", "--table", "bogus"], ["bogus", "offsets"]),
    (["topk", "vit", "--k", "1"], ["--k"]),
    (["topk", "vit", "--model", "/nonexistent/vit"], ["no such folder"]),
    (["topk", "whisper", "--table", "bogus"], ["bogus", "kendall"]),
    (["topk", "better-lm", "--model", "/etc"], ["holds no model"]),
    (["topics", "--layer", "13"], ["--neuron"]),
    (["topics", "--layer", "0", "--neuron", "1"], ["--layer"]),
    (["topics", "--layer", "13", "--neuron", "-1"], ["--neuron"]),
    (["topics", "--layer", "13", "--neuron", "1", "--tau", "0"], ["--tau"]),
    (["topics", "--layer", "13", "--neuron", "1", "--k", "1"], ["--k", "2..50"]),
    (["topics", "--layer", "13", "--neuron", "1", "--time-limit", "0"], ["--time-limit"]),
    (["topics", "--layer", "13", "--neuron", "1", "--min-freq", "0"], ["--min-freq"]),
    (["topics", "--layer", "13", "--neuron", "1", "--thresholds", "0.5", "0.1"], ["thresholds"]),
    (["topics", "--layer", "13", "--neuron", "1", "--size-limits", "0", "5"], ["size limits"]),
    (["topics", "--layer", "13", "--neuron", "1", "--table", "bogus"], ["bogus", "sets"]),
    (["topics", "--layer", "13", "--compare", "5", "--table", "bogus"], ["bogus", "tests"]),
    (["topics", "--layer", "13", "--neuron", "1", "--corpus", "/nonexistent/folder"], ["does not exist"]),
    (["topics", "--layer", "13", "--neuron", "1", "--model", "/etc"], ["holds no model"]),
    (["attention-mlp", "--per-layer", "0"], ["--per-layer"]),
    (["attention-mlp", "--n-texts", "0"], ["--n-texts"]),
    (["attention-mlp", "--window", "1"], ["--window"]),
    (["attention-mlp", "--top", "0"], ["--top"]),
    (["attention-mlp", "--blocks", "a,b"], ["--blocks"]),
    (["attention-mlp", "--keep", "1"], ["--keep", "strictly between 0 and 1"]),
    (["attention-mlp", "--keep", "0"], ["--keep", "(0, 1]"]),
    (["attention-mlp", "--keep", "nan"], ["--keep", "finite"]),
    (["attention-mlp", "--max-tokens", "1"], ["--max-tokens", "2..65536"]),
    (["attention-mlp", "--trim", "ternary"], ["--trim", "binary, linear"]),
    # the old 0-based flag: refused, naming the same blocks 1-based
    (["attention-mlp", "--layers", "26,27"], ["--layers took 0-based blocks", "--blocks 27,28", "1-based"]),
    (["attention-mlp", "--layers", "a,b"], ["--layers took 0-based blocks", "--blocks"]),
    (["attention-mlp", "--table", "bogus"], ["bogus", "neurons"]),
    (["attention-mlp", "--corpus", "/nonexistent.jsonl"], ["no such corpus file"]),
    (["attention-mlp", "--corpus", "/etc/passwd"], [".txt"]),
    (["attention-mlp", "--model", "/nonexistent/folder"], ["no such folder"]),
    # NDIF (--remote = --device ndif): what runs there, checked before anything loads
    (["lens", "--remote", "--prompt", "x"], ["NDIF", "not the bundled model"]),
    (["lens", "--model", "random:gpt2", "--remote", "--prompt", "x"], ["random-init", "NDIF"]),
    (["lens", "--model", "/etc", "--device", "ndif", "--prompt", "x"], ["not local files"]),
    (["lens", "--model", "gpt2", "--remote", "--dtype", "bfloat16", "--prompt", "x"], ["precision", "ndif"]),
    (["depth", "pos", "--model", "gpt2", "--remote"], ["--remote", "`lens` subcommand only"]),
    (["topk", "saturation", "--model", "gpt2", "--device", "ndif"], ["--remote", "`lens` subcommand only"]),
    (["attention-mlp", "--model", "meta-llama/Llama-3.1-8B", "--remote"], ["--remote", "`lens`"]),
    (["results", "--pages", "nope"], ["Unknown page", "extraction, depth"]),
    (["results", "--out", "results.txt"], ["--out", ".md"]),
    (["results", "--preset", "huge"], ["invalid choice", "paper"]),
    (["results", "--model", "/nonexistent/folder"], ["no such folder"]),
])
def test_bad_input_is_one_fast_line(args: list[str], words: list[str]) -> None:
    assert_refused(args, *words)


def test_remote_lens_needs_a_key_then_the_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    """No NDIF key: said before anything loads. A key but no hub (the model's config and tokenizer come from the
    hub, its weights never): one line from the loader, no traceback."""
    monkeypatch.delenv("NDIF_API_KEY", raising=False)
    assert_refused(["lens", "--model", "gpt2", "--remote", "--prompt", "x"], "NDIF_API_KEY", "login.ndif.us")
    monkeypatch.setenv("NDIF_API_KEY", "not-a-real-key")
    line = assert_refused(["lens", "--model", "meta-llama/Llama-3.1-8B", "--remote", "--prompt", "x"], "hub",
                          bound=90)
    assert "not-a-real-key" not in line


def test_usage_errors_are_one_line_too() -> None:
    assert_refused(["extraction", "--n", "abc"], "--n", "invalid int")
    assert_refused(["topk", "nosuchsection"], "invalid choice")


def test_bad_layer_and_neuron_from_config_json(tiny_model_dir: Path) -> None:
    model = str(tiny_model_dir)
    assert_refused(["topics", "--model", model, "--layer", "5", "--neuron", "1"], "--layer 5", "blocks 1..4")
    assert_refused(["topics", "--model", model, "--layer", "4", "--neuron", "96"], "--neuron 96", "96 MLP neurons")
    assert_refused(["topics", "--model", model, "--mode", "lo-c", "--layer", "1", "--neuron", "48"],
                   "--neuron 48", "48 residual dimensions")
    assert_refused(["topics", "--model", model, "--layer", "2", "--compare", "97"], "--compare", "1..96")
    assert_refused(["attention-mlp", "--model", model, "--blocks", "2,5"], "block 5", "blocks 1..4")
    assert_refused(["attention-mlp", "--model", model, "--blocks", "0,2"], "block 0", "blocks 1..4")
    assert_refused(["attention-mlp", "--model", model, "--per-layer", "97"], "--per-layer", "1..96")


@pytest.mark.integration
def test_bad_layer_and_neuron_of_the_bundled_model(bundled_session: object) -> None:
    assert BUNDLED_CONFIG.is_file()  # converted by the fixture (a fresh clone has no cache/models yet)
    assert_refused(["topics", "--layer", "31", "--neuron", "1"], "--layer 31", "blocks 1..30")
    assert_refused(["topics", "--layer", "13", "--neuron", "1536"], "--neuron 1536", "1536 MLP neurons")
    assert_refused(["attention-mlp", "--blocks", "27,31"], "block 31", "blocks 1..30")


def test_model_folder_without_weights(tiny_model_dir: Path) -> None:
    (tiny_model_dir / "model.safetensors").unlink()
    assert_refused(["lens", "--model", str(tiny_model_dir), "--prompt", "x"], "no weights", "random:")


def test_topics_corpus_folder_without_txt(tmp_path: Path) -> None:
    (tmp_path / "notes.md").write_text("words " * 2000)
    assert_refused(["topics", "--layer", "13", "--neuron", "1", "--corpus", str(tmp_path)], "holds no .txt")
    (tmp_path / "short.txt").write_text("too few words here")
    assert_refused(["topics", "--layer", "13", "--neuron", "1", "--corpus", str(tmp_path)], "fewer than 1,000 words")


def test_corpus_files_that_hold_no_text(tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    assert_refused(["extraction", "--corpus", str(empty)], "empty")
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text('{"text": "fine"}\nnot json\n')
    assert_refused(["extraction", "--corpus", str(bad_json)], "line 2", "not valid json")
    no_column = tmp_path / "table.csv"
    no_column.write_text("title,body\na,b\n")
    assert_refused(["attention-mlp", "--corpus", str(no_column)], "column named 'text'")
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\x00\x01\x02" * 100)
    assert_refused(["extraction", "--corpus", str(binary)], "binary")
    long = tmp_path / "long.txt"
    long.write_text("word " * 5000)
    assert_refused(["extraction", "--corpus", str(long)], "length filter")


def test_import_lens_folders(tmp_path: Path) -> None:
    assert_refused(["import-lens", "--dir", str(tmp_path)], "no params.safetensors")
    (tmp_path / "params.pt").write_bytes(b"pickle")
    assert_refused(["import-lens", "--dir", str(tmp_path)], "pickled", "params.pt")
    (tmp_path / "params.safetensors").write_bytes(b"junk")
    assert_refused(["import-lens", "--dir", str(tmp_path)], "not a safetensors file")


def test_parser_and_checks_import_no_torch() -> None:
    code = ("import sys; from core.cli.main import build_parser; build_parser().parse_args(['topics', '--layer', "
            "'1', '--neuron', '0']); import core.validate, core.cli.common; "
            "assert not {'torch', 'transformers', 'pandas'} & set(sys.modules), sorted(sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]


def test_help_still_works() -> None:
    done, _ = run_cli("topics", "--help")
    assert done.returncode == 0 and "--neuron" in done.stdout
    assert "block l (1-based; writes layer l)" in " ".join(done.stdout.split())


# -- core/validate.py, function by function ------------------------------------------------------------------
def test_one_line() -> None:
    assert validate.one_line("a\n  b\tc ") == "a b c"


def test_int_range() -> None:
    assert validate.int_range("--n", 5, 1, 10) == 5
    assert validate.int_range("--n", 10**9, 1) == 10**9
    for bad in (0, 11, 2.5, True, "3"):
        with pytest.raises(ValueError, match="--n"):
            validate.int_range("--n", bad, 1, 10)  # type: ignore[arg-type]


def test_number_range() -> None:
    assert validate.number_range("--ratio", 1, 0.0, 1.0, lo_open=True) == 1.0
    assert validate.number_range("--x", 0.0, 0.0, 1.0) == 0.0
    for bad in (0.0, 1.5, float("nan"), float("inf"), "1"):
        with pytest.raises(ValueError, match="--ratio"):
            validate.number_range("--ratio", bad, 0.0, 1.0, lo_open=True)  # type: ignore[arg-type]


def test_choice_and_names() -> None:
    assert validate.choice("table", "a", ("a", "b")) == "a"
    with pytest.raises(ValueError, match="Unknown table 'c' here; choose from a, b"):
        validate.choice("table", "c", ("a", "b"), " here")
    assert validate.names("--m", " a, b ,", ("a", "b")) == ["a", "b"]
    with pytest.raises(ValueError, match="empty"):
        validate.names("--m", " , ", ("a",))
    with pytest.raises(ValueError, match="Unknown --m c"):
        validate.names("--m", "a,c", ("a", "b"))


def test_int_list() -> None:
    assert validate.int_list("--layers", "26, 27,") == [26, 27]
    assert validate.int_list("--layers", "") == []
    with pytest.raises(ValueError, match="--layers"):
        validate.int_list("--layers", "1,x")


def test_split_model_and_looks_like_path() -> None:
    assert validate.split_model("") == ("bundled", False)
    assert validate.split_model(" random: gpt2 ") == ("gpt2", True)
    assert validate.split_model("random:") == ("bundled", True)
    assert validate.looks_like_path("./x") and validate.looks_like_path("~/x") and validate.looks_like_path("/x")
    assert not validate.looks_like_path("EleutherAI/pythia-160m")


def test_model_folder(tmp_path: Path, tiny_model_dir: Path) -> None:
    assert validate.model_folder(tiny_model_dir) == tiny_model_dir
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="holds no model"):
        validate.model_folder(empty)
    (tmp_path / "m.gguf").write_bytes(b"")
    with pytest.raises(ValueError, match="give that file itself"):
        validate.model_folder(tmp_path)
    (tiny_model_dir / "model.safetensors").unlink()
    with pytest.raises(ValueError, match="no weights"):
        validate.model_folder(tiny_model_dir)
    assert validate.model_folder(tiny_model_dir, need_weights=False) == tiny_model_dir
    (tiny_model_dir / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="model_type"):
        validate.model_folder(tiny_model_dir, need_weights=False)


def test_model_source(tmp_path: Path, tiny_model_dir: Path) -> None:
    for good in ("bundled", "", "random:bundled", "gpt2", "EleutherAI/pythia-160m", str(tiny_model_dir)):
        validate.model_source(good)
    (tiny_model_dir / "model.safetensors").unlink()
    validate.model_source("random:" + str(tiny_model_dir))  # the twin needs no weights
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    assert validate.model_source(str(gguf)) == str(gguf)
    cases = {"/etc": "holds no model", "/nonexistent/folder": "no such folder", "./nope": "no such folder",
             "/etc/passwd": "is a file", "/no/x.gguf": "No such .gguf", "two words": "hub id"}
    for source, message in cases.items():
        with pytest.raises(ValueError, match=message):
            validate.model_source(source)


def test_read_config(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text('{"a": 1}')
    assert validate.read_config(path) == {"a": 1}
    for text in ("[1]", "not json"):
        path.write_text(text)
        with pytest.raises(ValueError, match="config.json"):
            validate.read_config(path)


def test_dims_from_config() -> None:
    assert validate.dims_from_config(TINY) == validate.ModelDims(4, 48, 96)
    assert validate.dims_from_config({"model_type": "gpt2", "n_layer": 2, "n_embd": 8, "n_inner": None}) == \
        validate.ModelDims(2, 8, 32)
    assert validate.dims_from_config({"model_type": "opt", "num_hidden_layers": 2, "hidden_size": 8,
                                      "ffn_dim": 20}) == validate.ModelDims(2, 8, 20)
    assert validate.dims_from_config({"model_type": "x"}) is None


def test_dims_match_the_adapters_of_every_family(tmp_path: Path, arch_session) -> None:
    """config.json alone gives the sizes the loaded model's adapter reports (the layer / neuron checks' source)."""
    arch_session.model.config.save_pretrained(tmp_path)
    adapter = arch_session.adapter
    assert validate.model_dims(str(tmp_path)) == validate.ModelDims(adapter.n_layers, adapter.d_model, adapter.d_mlp)


def test_model_dims(tiny_model_dir: Path) -> None:
    assert validate.model_dims(str(tiny_model_dir)) == validate.ModelDims(4, 48, 96)
    assert validate.model_dims("random:" + str(tiny_model_dir)) == validate.ModelDims(4, 48, 96)
    assert validate.model_dims("/no/such/model.gguf") is None
    assert validate.model_dims("nobody/no-such-model-xyz") is None  # not in the local hub cache
    if BUNDLED_CONFIG.is_file():
        assert validate.model_dims("bundled") == validate.ModelDims(30, 576, 1536)


def test_block_and_unit() -> None:
    assert validate.block("--layer", 30, 30, first=1) == 30
    assert validate.block("--layers", 0, 30) == 0
    for bad, first in ((0, 1), (31, 1), (30, 0), (-1, 0)):
        with pytest.raises(ValueError, match="does not exist"):
            validate.block("--layer", bad, 30, first=first)
    assert validate.unit("--neuron", 1535, 1536, "MLP neurons") == 1535
    with pytest.raises(ValueError, match=r"1536 MLP neurons \(0..1535\)"):
        validate.unit("--neuron", 1536, 1536, "MLP neurons")


def test_corpus_file(tmp_path: Path) -> None:
    good = tmp_path / "a.txt"
    good.write_text("one\n\ntwo")
    assert validate.corpus_file(good) == ["one", "two"]
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text('{"text": "x"}\n')
    assert validate.corpus_file(jsonl) == ["x"]
    with pytest.raises(ValueError, match="MB"):
        validate.corpus_file(good, max_bytes=2)
    with pytest.raises(ValueError, match="not a .txt"):
        validate.corpus_file(Path("/etc/passwd"))
    with pytest.raises(ValueError, match="folder"):
        validate.corpus_file(tmp_path)


def test_corpus(tmp_path: Path) -> None:
    assert validate.corpus("wikipedia", ("wikipedia", "lee")) is None
    good = tmp_path / "a.csv"
    good.write_text("text\nhello\n")
    assert validate.corpus(str(good), ("wikipedia",)) == ["hello"]
    for text, message in (("/nonexistent.txt", "No such corpus file"), ("nope.csv", "No such corpus file"),
                          ("wiki", "Unknown corpus 'wiki'; choose from wikipedia")):
        with pytest.raises(ValueError, match=message):
            validate.corpus(text, ("wikipedia",))


def test_text_folder(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        validate.text_folder(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="holds no .txt"):
        validate.text_folder(str(tmp_path))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.txt").write_text("words")
    assert validate.text_folder(str(tmp_path)) == tmp_path
    with pytest.raises(ValueError, match="not a folder"):
        validate.text_folder(str(tmp_path / "sub" / "a.txt"))
    with pytest.raises(ValueError, match="limit"):
        validate.text_folder(str(tmp_path), max_bytes=1)


def _safetensors(path: Path, header: dict) -> None:
    body = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(body)) + body)


def test_safetensors_header_and_lens_folder(tmp_path: Path) -> None:
    import numpy as np
    from safetensors.numpy import save_file

    params = tmp_path / "params.safetensors"
    save_file({"0.weight": np.zeros((2, 2), np.float32)}, str(params))
    assert "0.weight" in validate.safetensors_header(params)
    assert validate.lens_folder(str(tmp_path)) == tmp_path
    for data in (b"", b"\xff" * 8 + b"{}", struct.pack("<Q", 4) + b"nope"):
        params.write_bytes(data)
        with pytest.raises(ValueError, match="not a safetensors file"):
            validate.safetensors_header(params)
    _safetensors(params, {"__metadata__": {}})
    validate.lens_folder(str(tmp_path))
    params.unlink()
    with pytest.raises(ValueError, match="no params.safetensors"):
        validate.lens_folder(str(tmp_path))
    with pytest.raises(ValueError, match="No lens folder"):
        validate.lens_folder(str(tmp_path / "missing"))


# -- the CLI's defaults and names are the analyses' own ------------------------------------------------------
def _parsed(*argv: str) -> dict:
    """The namespace of ``python -m core <argv>`` as a dict (defaults for every flag not given)."""
    from core.cli.main import build_parser

    return vars(build_parser().parse_args(list(argv)))


def _choices(command: str, dest: str) -> tuple:
    """The choices of flag ``dest`` of subcommand ``command``."""
    from core.cli.main import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    return tuple(next(a for a in sub._actions if a.dest == dest).choices)


def _signature_default(function, name: str):
    return inspect.signature(function).parameters[name].default


def test_cli_defaults_are_the_analyses_defaults() -> None:
    """Every subcommand: a flag left out takes the analysis's own default (its dataclass field or function
    default), so the command line computes, and caches, exactly what the page does with the same settings."""
    from dataclasses import fields

    from core.analyses.attention_mlp.pipeline import HeadParams, RunConfig, ScanParams
    from core.analyses.depth.sections import run_section as depth_run
    from core.analyses.extraction import run_extraction
    from core.analyses.lens import run_lens
    from core.analyses.topk.params import TopkParams
    from core.cli.topk import _params as topk_params
    from core.lenses import registry
    from core.lenses.training import TrainingConfig

    assert _parsed("lens", "--prompt", "x")["top_k"] == _signature_default(run_lens, "top_k")
    ext = _parsed("extraction")
    assert ext["seed"] == _signature_default(run_extraction, "seed")
    assert ext["methods"].split(",") == list(registry.NAMES)
    train = _parsed("train-lens")
    assert (train["kl_seconds"], train["tokens"]) == (TrainingConfig().kl_seconds, TrainingConfig().n_train_tokens)
    depth = _parsed("depth", "pos")
    assert depth["seed"] == _signature_default(depth_run, "seed") and depth["lens"] == "logit"
    topk = _parsed("topk", "saturation")
    for field in fields(TopkParams):
        if field.name != "n_tasks":  # None on the command line: 4 for text and Whisper, k for ViT
            assert topk[field.name] == field.default, field.name
    assert topk_params(argparse.Namespace(**topk)) == TopkParams()
    amlp = _parsed("attention-mlp")
    run_defaults = {f.name: f.default for f in fields(RunConfig) if f.name in ("per_layer", "n_texts", "control",
                                                                                 "seed")}
    assert {name: amlp[name] for name in run_defaults} == run_defaults
    assert {k: amlp[k] for k in ("window", "top", "keep", "max_tokens", "trim")} == {
        k: getattr(ScanParams(), k) for k in ("window", "top", "keep", "max_tokens", "trim")}
    assert amlp["include_own"] == HeadParams().include_own


def test_cli_names_are_the_analyses_names() -> None:
    """Sections, tables, modes and lenses the command line accepts are the analyses' and the registries' own."""
    from core.analyses.depth.sections import REGISTRY as DEPTH
    from core.analyses.topics.vocab import MODES
    from core.analyses.topk.sections import REGISTRY as TOPK
    from core.cli import depth as cli_depth
    from core.cli import topk as cli_topk
    from core.lenses import registry

    assert _choices("topk", "section")[:len(TOPK.names)] == TOPK.names
    assert {s: cli_topk.TABLES[s] for s in TOPK.names} == TOPK.tables
    assert _choices("depth", "section") == DEPTH.names + ("all",)
    assert cli_depth.TABLES == DEPTH.tables
    assert set(_choices("depth", "lens")) <= set(registry.NAMES)
    assert _choices("topics", "mode") == tuple(MODES)


def test_topics_defaults_are_the_analysis_defaults() -> None:
    """Unset --tau/--k/... take TopicParams' defaults, as before (same cache keys)."""
    from core.analyses.topics.neuron import TopicParams
    from core.cli.main import build_parser
    from core.cli.topics import _params

    args = build_parser().parse_args(["topics", "--layer", "1", "--neuron", "0"])
    assert _params(args) == TopicParams()
    args = build_parser().parse_args(["topics", "--layer", "1", "--neuron", "0", "--tau", "300", "--k", "5"])
    assert _params(args) == TopicParams(tau=300, k=5)


@pytest.mark.parametrize("field", ["n", "k", "max_tokens", "n_perm", "folds", "n_eval"])
def test_topk_bounds_agree_with_topk_params(field: str) -> None:
    """What the CLI lets through, TopkParams.check accepts; the CLI's lower bound is TopkParams' own."""
    from core.analyses.topk.params import TopkParams
    from core.cli.topk import TEXT_BOUNDS

    lo, hi = TEXT_BOUNDS[field]
    base = {"n_tasks": 2}
    TopkParams(**base, **{field: lo}).check()
    TopkParams(**base, **{field: hi}).check()
    with pytest.raises(ValueError):
        TopkParams(**base, **{field: lo - 1}).check()
    if field in ("k", "folds"):  # the analysis's own upper bounds
        with pytest.raises(ValueError):
            TopkParams(**base, **{field: hi + 1}).check()


def test_topics_bounds_agree_with_topic_params() -> None:
    from core.analyses.topics.neuron import TopicParams
    from core.cli.topics import BOUNDS

    for field in ("tau", "min_freq", "k"):
        lo, hi = BOUNDS[field]
        TopicParams(**{field: lo}).check()
        with pytest.raises(ValueError):
            TopicParams(**{field: lo - 1}).check()
    with pytest.raises(ValueError):
        TopicParams(k=BOUNDS["k"][1] + 1).check()
    with pytest.raises(ValueError):
        TopicParams(time_limit=0.0).check()


# -- pages: bad input shows one error and starts no job ----------------------------------------------------------
def test_home_page_with_a_folder_that_holds_no_model() -> None:
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)  # the home page, through the menu
    at.query_params["model"] = "/etc"
    at.run()
    assert not at.exception
    assert [e.value for e in at.error] == [
        "The folder '/etc' holds no model: no config.json with weights (*.safetensors) and no .gguf file."]


def test_other_modalities_inputs_are_checked_before_the_job() -> None:
    from ui.views.topk_more import _input_problems

    assert _input_problems("vit", "", [], []) == []
    assert "no such folder" in _input_problems("vit", "/nonexistent/vit", [], [])[0]
    assert "holds no model" in _input_problems("whisper", "/etc", [], [])[0]
    files = [("a.wav", b"")]
    assert _input_problems("whisper", "", files, []) == []  # the tiny demo needs no transcripts
    assert any("one transcript per WAV" in p for p in _input_problems("whisper", "openai/whisper-tiny", files, []))
