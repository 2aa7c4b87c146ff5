"""Fuzzing the command line: every subcommand and every option of ``python -m core``, read from the real argparse
parser, gets generated malformed values (empty, blank, huge, negative, non-numeric, NaN/inf, unicode with a
right-to-left override, 10,000 characters, 5,000 digits, a folder where a file is wanted and the reverse,
/dev/null, a nonexistent path, a binary file, a binary file named .gguf/.md/.txt). Every case must end with exit
status 2 and exactly one ``error: ...`` line on stderr (nothing on stdout, no traceback, at most
``MAX_MESSAGE`` characters), before any model, lens or corpus work starts.

How: each case runs ``core.cli.main.main(argv)`` in this process with ``load_session`` (and the ViT/Whisper
runner) replaced by a sentinel, so a malformed value that slipped past the checks shows up as "would start model
work" instead of loading a model; each subcommand's base command line (the fuzzed option left out) is checked to
reach that sentinel, so every refusal counted is the fuzzed value's. A handful of cases also run end to end in a
subprocess (``python -m core``, HF_HUB_OFFLINE=1), as a user would.

Measured here (2 AMD cores): 2,932 in-process cases over the 12 subcommands and
158 options (every section of ``depth`` and ``topk`` as its own base) in about 10 s, 0 tracebacks; 10 cases end to
end in a subprocess, 0.3-0.6 s each. ``pytest -s`` prints the count lines.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import struct
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import pytest

from core import validate
from core.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[2]
BUNDLED_CONFIG = ROOT / "cache" / "models" / validate.BUNDLED_DIR / "config.json"
FAST_S = 10.0  # a refusal takes milliseconds in process; torch import alone is 4-5 s, a model load 15-25 s
MAX_MESSAGE = 600  # characters of the one error line: a 10,000-character value is not echoed whole



pytestmark = pytest.mark.integration  # layer and vocabulary bounds are read from the bundled model's config


@pytest.fixture(scope="module", autouse=True)
def _bundled_config(bundled_session: object) -> None:
    """The bundled model converted into cache/models: the checks read layer counts from its config.json (a fresh
    clone converts it here, once per test session)."""
    assert BUNDLED_CONFIG.is_file()

# -- the malformed values ---------------------------------------------------------------------------------------
UNICODE = "ü🦙\u202e"  # a letter, an emoji, a right-to-left override
LONG = "x" * 10_000
NUL = "nul\x00byte"  # no file can have this name (in process only: argv cannot carry a NUL)
NO_USER = "~nosuchuser-fuzz/model"  # ~user that this machine does not have
HUGE = str(10**30)
DIGITS = "9" * 5_000  # over Python's 4,300-digit int() limit
INTS = ["", " ", "abc", "1.5", "nan", "inf", "-5", HUGE, "-" + HUGE, DIGITS, UNICODE, LONG, "0x10", "1e3"]
FLOATS = ["", "abc", "nan", "inf", "-inf", "-5", HUGE, "1e309", UNICODE, LONG]
CHOICES = ["", "bogus", UNICODE, LONG]
INT_LISTS = ["", ",", "1,,x,-5", "abc", "-5", HUGE, "1.5", UNICODE, LONG, DIGITS]
NAME_LISTS = ["", ",", "bogus", "logit,,bogus", UNICODE, LONG]
TABLES = ["", "bogus", UNICODE, LONG, "../../etc/passwd"]
CELLS = ["", "abc", "1", "1,2,3", "-5,0", f"{HUGE},0", f"1,{HUGE}", f"1,-{HUGE}", "1.5,0", UNICODE, LONG]
PROMPTS = ["", "   ", "\n\t"]
TOKENS = [""]
SEEDS = ["-5", HUGE, str(2**64)]  # whole numbers argparse takes, no seed the analyses can use
DTYPES = ["", "abc", "float64", UNICODE, LONG]
DEVICES = ["", "abc", "cuda:99", "cuda:-1", "cuda:", "CPU", UNICODE, LONG]


@dataclass(frozen=True)
class Case:
    command: str
    option: str  # "--flag", a positional's dest, or "(argv)" for whole-line cases
    argv: tuple[str, ...]


@dataclass
class Outcome:
    code: int | None
    stdout: str
    stderr: str
    seconds: float
    traceback: str = ""
    reached_work: bool = False

    def lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


class _ReachedWork(BaseException):
    """Raised where the subcommand would load a model (or run the ViT/Whisper demo): its checks let the input
    through. A BaseException, so main()'s ``except ValueError`` cannot swallow it."""


# -- files the path options are given ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Named paths: folders, a binary file under several names, a valid lens folder (the import-lens base)."""
    tmp = tmp_path_factory.mktemp("fuzz")
    binary = bytes(range(256)) * 64
    out = {"folder": str(tmp / "folder"), "missing": str(tmp / "no" / "such" / "thing"), "devnull": os.devnull}
    (tmp / "folder").mkdir()
    for name in ("binary", "binary.txt", "binary.csv", "binary.jsonl", "binary.gguf", "binary.md",
                 "binary.safetensors"):
        (tmp / name).write_bytes(binary)
        out[name] = str(tmp / name)
    for name in ("folder.txt", "folder.gguf", "folder.md", "folder.csv"):  # folders named as files
        (tmp / name).mkdir()
        out[name] = str(tmp / name)
    (tmp / "empty.csv").write_bytes(b"")
    out["empty.csv"] = str(tmp / "empty.csv")
    header = json.dumps({"__metadata__": {}}).encode()
    folders = {  # name -> (key in ``out``, the one file inside, its bytes)
        "lens": ("lens", "params.safetensors", struct.pack("<Q", len(header)) + header),  # a valid (empty) lens
        "pickled": ("pickled", "params.pt", binary),
        "junk-lens": ("junk-lens", "params.safetensors", binary),
        "config-only": ("binary-config", "config.json", binary),
        "few-words": ("few-words", "a.txt", b"too few words"),
        "binary-txt": ("binary-txt", "a.txt", binary),
    }
    for name, (key, file, data) in folders.items():
        (tmp / name).mkdir()
        (tmp / name / file).write_bytes(data)
        out[key] = str(tmp / name)
    return out


def model_values(p: dict[str, str]) -> list[str]:
    return ["/etc", "/etc/passwd", p["devnull"], p["missing"], p["binary"], p["binary.gguf"], p["folder.gguf"],
            p["folder"], p["binary-config"], "random:" + p["missing"], "random:/etc/passwd", UNICODE, "ü" + LONG,
            LONG, NUL, NO_USER, "a/b/c", "../..", "http://example.com/x", "a" * 97, "bundled,dtype=bogus",
            "bundled,device=cuda:99",
            "gpt2,device=ndif,dtype=float16", "bundled,device=ndif"]


def values_for(command: str, action: argparse.Action, p: dict[str, str]) -> list[list[str]]:
    """Malformed values for one option, each a list of argv words after the flag (nargs=2 takes two)."""
    dest = action.dest
    if dest in ("model_text",):
        return [[v] for v in model_values(p)]
    if dest == "dtype":
        return [[v] for v in DTYPES]
    if dest == "device":
        return [[v] for v in DEVICES]
    if action.nargs == 0:  # store_true flags and --remote: a value given to a flag that takes none
        return [["=abc"]]
    if action.nargs == 2:
        if action.type is float:
            return [["nan", "nan"], ["abc", "0.5"], ["0.5"], ["0.5", "0.1"], ["-5", HUGE], ["inf", "inf"]]
        return [["0", "5"], ["-5", "-1"], ["abc", "1"], ["1"], [HUGE, HUGE], ["9", "3"]]
    if action.nargs == "*":  # results --pages
        return [["bogus"], ["depth=huge"], [""], [UNICODE], [LONG], ["=quick"], ["depth", "bogus"]]
    if action.choices is not None:
        return [[v] for v in CHOICES + [str(next(iter(action.choices))).upper() + "X"]]
    if dest == "seed" or dest == "random":
        return [[v] for v in SEEDS + INTS]
    if dest == "position":  # negative positions count from the end: whether -5 exists needs the tokenizer
        return [[v] for v in INTS if v != "-5"]
    if action.type is int:
        return [[v] for v in INTS]
    if action.type is float:
        return [[v] for v in FLOATS]
    if dest in ("prompt", "corrupt"):
        return [[v] for v in PROMPTS]
    if dest in ("target", "token", "other"):
        return [[v] for v in TOKENS]
    if dest in ("layers", "positions", "blocks"):  # --blocks "": the default blocks; --positions -5: see position
        skip = {"blocks": "", "positions": "-5"}.get(dest)
        return [[v] for v in INT_LISTS if v != skip]
    if dest == "methods":
        return [[v] for v in NAME_LISTS]
    if dest == "table":
        return [[v] for v in TABLES]
    if dest == "trim":  # attention-mlp's trimming search: binary or linear
        return [[v] for v in CHOICES + ["Binary", "ternary"]]
    if dest in ("source_cell", "target_cell"):
        return [[v] for v in CELLS]
    if dest == "corpus" and command == "topics":  # a folder of .txt files ("" = the bundled Wikipedia)
        return [[v] for v in ("/etc/passwd", p["devnull"], p["missing"], p["binary"], p["folder"], p["few-words"],
                              p["binary-txt"], UNICODE, LONG, NUL, NO_USER)]
    if dest == "corpus":  # a bundled name or a .txt/.jsonl/.csv file
        return [[v] for v in ("", "/etc", "/etc/passwd", p["devnull"], p["missing"] + ".txt", p["binary"],
                              p["binary.txt"], p["binary.csv"], p["binary.jsonl"], p["folder.txt"], p["empty.csv"],
                              UNICODE, LONG, NUL, NO_USER + ".txt", "../../etc/passwd")]
    if dest == "dir":  # a lens folder
        return [[v] for v in ("", "/etc/passwd", p["devnull"], p["missing"], p["binary"], p["folder"], p["pickled"],
                              p["junk-lens"], UNICODE, LONG, NUL, NO_USER)]
    if dest == "out":  # a .md file to write
        return [[v] for v in ("", p["devnull"], p["folder"], p["folder.md"], p["missing"] + ".md", LONG + ".md",
                              "/etc/passwd", UNICODE, NUL + ".md")]
    if dest == "reject":  # free text: any tokens may be rejected
        return []
    raise AssertionError(f"no malformed values for {command} {action.option_strings or dest}: add them here")


# -- the parser, read -------------------------------------------------------------------------------------------
def subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = cli_main.build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def bases(command: str, parser: argparse.ArgumentParser, p: dict[str, str]) -> list[list[str]]:
    """Command lines that pass every check (they reach the sentinel): one per positional choice (every depth and
    topk section), the required options filled."""
    required = {"--prompt": "x", "--layer": "13", "--dir": p["lens"]}
    base: list[str] = []
    for action in parser._actions:
        if action.required and action.option_strings:
            flag = action.option_strings[-1]
            assert flag in required, f"{command}: a required {flag} this test does not know; add a valid value"
            base += [flag, required[flag]]
    extra = {"topics": ["--neuron", "1"], "patch": ["--corrupt", "y"]}.get(command, [])
    positional = [a for a in parser._actions if not a.option_strings and a.dest != "help"]
    if not positional:
        out = [base + extra]
        if command == "patch":  # the patch lens: its own flags
            out.append(base + ["--source-cell", "1,0", "--target-cell", "1,0"])
        return out
    [pos] = positional
    return [[str(choice)] + base + extra + (["--table", "verdicts"] if choice == "all" else [])
            for choice in pos.choices]


def generate_cases(p: dict[str, str]) -> tuple[list[Case], list[Case]]:
    """(fuzzed cases, base command lines)."""
    cases: list[Case] = []
    base_cases: list[Case] = []
    for command, parser in subparsers().items():
        command_bases = bases(command, parser, p)
        base_cases += [Case(command, "(base)", (command, *b)) for b in command_bases]
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            for base in command_bases:
                if not action.option_strings:  # the positional section
                    if base is not command_bases[0]:
                        continue
                    for value in CHOICES + [str(next(iter(action.choices))).upper()]:
                        cases.append(Case(command, action.dest, (command, value, *base[1:])))
                    continue
                flag = action.option_strings[-1]
                if command == "patch" and (flag in ("--source-cell", "--target-cell")) != ("--source-cell" in base):
                    continue  # the patch-lens flags on the patch-lens base, the others on the grid's
                stripped = _without(base, flag)
                for words in values_for(command, action, p):
                    if words == ["=abc"]:
                        argv = (command, *stripped, flag + "=abc")
                    else:
                        argv = (command, *stripped, flag, *words)
                    cases.append(Case(command, flag, argv))
        missing = [[]] if any(a.required for a in parser._actions) else []  # a required option or section left out
        cases += [Case(command, "(argv)", (command, *a)) for a in missing + [["--bogus"], ["--prompt"], ["-n"]]]
        cases.append(Case(command, "(argv)", (command, *command_bases[0], "extra-word")))
    return cases, base_cases


def _without(base: list[str], flag: str) -> list[str]:
    """``base`` without ``flag`` and its value (the fuzzed option replaces it)."""
    out, skip = [], False
    for i, word in enumerate(base):
        if skip:
            skip = False
            continue
        if word == flag and i > 0:
            skip = True
            continue
        out.append(word)
    return out


# -- running a case in this process -----------------------------------------------------------------------------
@pytest.fixture
def sentinel(monkeypatch: pytest.MonkeyPatch) -> None:
    """Model work replaced by :class:`_ReachedWork`; offline, no NDIF key, no logging setup."""
    import core.cli as cli_pkg
    from core.cli import topk

    def reached(*args: object, **kwargs: object) -> None:
        raise _ReachedWork()

    for module in cli_main.MODULES + (cli_pkg.common,):
        if hasattr(module, "load_session"):
            monkeypatch.setattr(module, "load_session", reached)
    monkeypatch.setattr(topk, "_more_section", reached)
    monkeypatch.setattr(logging, "basicConfig", lambda **kwargs: None)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("NDIF_API_KEY", raising=False)


def run_in_process(argv: tuple[str, ...]) -> Outcome:
    out, err = io.StringIO(), io.StringIO()
    start = time.perf_counter()
    code: int | None = None
    trace = ""
    reached = False
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli_main.main(list(argv))
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        except _ReachedWork:
            reached = True
        except BaseException:  # what a user would see as a traceback
            trace = traceback.format_exc()
    return Outcome(code, out.getvalue(), err.getvalue(), time.perf_counter() - start, trace, reached)


def problem(outcome: Outcome) -> str | None:
    """Why ``outcome`` is not a clean refusal (None when it is one)."""
    if outcome.traceback or "Traceback" in outcome.stderr:
        return "traceback: " + (outcome.traceback or outcome.stderr)[-1500:]
    if outcome.reached_work:
        return "accepted: the subcommand would start model work"
    lines = outcome.lines()
    if outcome.code != 2:
        return f"exit status {outcome.code} (stderr {outcome.stderr[-300:]!r})"
    if len(lines) != 1 or not lines[0].startswith("error: ") or len(lines[0]) <= len("error: ") + 5:
        return f"not one error line: {outcome.stderr[-500:]!r}"
    if not lines[0].isprintable():  # a raw control or right-to-left override would garble the terminal
        return f"unescaped control characters: {lines[0][:200]!r}"
    if len(lines[0]) > MAX_MESSAGE:
        return f"a {len(lines[0])}-character message: {lines[0][:200]!r}…"
    if outcome.stdout:
        return f"stdout: {outcome.stdout[:200]!r}"
    if outcome.seconds > FAST_S:
        return f"took {outcome.seconds:.1f} s"
    return None


def test_every_base_command_line_reaches_the_model(paths: dict[str, str], sentinel: None) -> None:
    """The bases pass every check, so each refusal below is the fuzzed value's (and the sentinel works)."""
    _, base_cases = generate_cases(paths)
    assert len({c.command for c in base_cases}) == len(subparsers()) >= 12
    for case in base_cases:
        outcome = run_in_process(case.argv)
        assert outcome.reached_work and not outcome.traceback, (case.argv, outcome)


def test_malformed_values_for_every_option_are_one_error_line(paths: dict[str, str], sentinel: None) -> None:
    cases, _ = generate_cases(paths)
    start = time.perf_counter()
    failures = []
    tracebacks = 0
    for case in cases:
        outcome = run_in_process(case.argv)
        tracebacks += bool(outcome.traceback)
        why = problem(outcome)
        if why is not None:
            failures.append(f"{' '.join(a if len(a) < 60 else a[:40] + '…' for a in case.argv)}: {why}")
    seconds = time.perf_counter() - start
    options = {(c.command, c.option) for c in cases}
    print(f"\nfuzz CLI: {len(cases)} cases over {len({c.command for c in cases})} subcommands and {len(options)} "
          f"options in process ({seconds:.1f} s), {tracebacks} tracebacks, {len(failures)} not refused cleanly")
    assert len(cases) > 1000
    if os.environ.get("FUZZ_DUMP"):
        Path(os.environ["FUZZ_DUMP"]).write_text("\n".join(failures))
    assert not failures, f"{len(failures)} of {len(cases)} cases:\n" + "\n".join(failures[:80])


# -- end to end, a few in a subprocess ----------------------------------------------------------------------------
def run_cli(*args: str) -> Outcome:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("NDIF_API_KEY", None)
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "core", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    return Outcome(done.returncode, done.stdout, done.stderr, time.monotonic() - start)


def test_end_to_end_in_a_subprocess(paths: dict[str, str]) -> None:
    """The same refusals from a real ``python -m core``: exit 2, one line, fast (no torch import, no model)."""
    argvs = [
        ("lens", "--prompt", "x", "--top-k", HUGE),
        ("lens", "--prompt", "x", "--model", LONG),
        ("generate", "--prompt", "x", "--temperature", "nan"),
        ("extraction", "--corpus", paths["binary.txt"]),
        ("import-lens", "--dir", paths["binary"]),
        ("topics", "--layer", "13", "--neuron", "1", "--corpus", paths["devnull"]),
        ("topk", "saturation", "--seed", "-5"),
        ("patch", "--prompt", "x", "--source-cell", "1,0", "--target-cell", f"1,{HUGE}"),
        ("results", "--out", paths["folder.md"]),
        ("attention-mlp", "--blocks", "1,,x,-5"),
    ]
    for argv in argvs:
        outcome = run_cli(*argv)
        why = problem(outcome)
        assert why is None, (argv[:4], why)
    print(f"\nfuzz CLI: {len(argvs)} cases end to end in a subprocess, 0 tracebacks")
