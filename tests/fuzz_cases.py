"""Shared by the fuzz and reliability tests: a tiny run trained once per test session, seeded
byte mutations, the CLI run in-process or as a command, and the check that an outcome is either
the right answer or one ``siamnet: error:`` line naming the file.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import random
import subprocess
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helpers import ENV, SIAMNET

#: The arguments of the tiny run: a real `siamnet train` of a few steps on the built-in digits.
TINY_TRAIN = [
    "train",
    "--model",
    "conv4",
    "--loss",
    "contrastive",
    "--epochs",
    "1",
    "--steps-per-epoch",
    "2",
    "--batch-size",
    "16",
    "--device",
    "cpu",
    "--quiet",
]


def tiny_run(tmp_path_factory: Any) -> Path:
    """A run folder made by ``siamnet train`` (in-process), once per test session."""
    run = tmp_path_factory.getbasetemp() / "tiny-run"
    if not (run / "best.pt").is_file():
        done = run_main([*TINY_TRAIN, "--out", str(run), "--overwrite"])
        assert done.code == 0, (done.crash, done.stderr)
        assert (run / "best.pt").is_file() and (run / "last.pt").is_file()
    return run


# --- mutations -------------------------------------------------------------------------------

#: Byte-level mutations, by name; each takes the bytes and a seeded `random.Random`.
BYTE_MUTATIONS: dict[str, Callable[[bytes, random.Random], bytes]] = {}


def _mutation(name: str) -> Callable:
    def register(fn: Callable[[bytes, random.Random], bytes]) -> Callable:
        BYTE_MUTATIONS[name] = fn
        return fn

    return register


@_mutation("truncate")
def truncate(data: bytes, rng: random.Random) -> bytes:
    """Cut at a random offset (possibly 0)."""
    return data[: rng.randrange(len(data))]


@_mutation("truncate-tail")
def truncate_tail(data: bytes, rng: random.Random) -> bytes:
    """Lose the last 1..64 bytes."""
    return data[: len(data) - rng.randint(1, min(64, len(data)))]


@_mutation("flip")
def flip(data: bytes, rng: random.Random) -> bytes:
    """One byte replaced by a different one."""
    return flip_at(data, rng, [rng.randrange(len(data))])


@_mutation("flip8")
def flip8(data: bytes, rng: random.Random) -> bytes:
    """Eight bytes replaced."""
    return flip_at(data, rng, [rng.randrange(len(data)) for _ in range(8)])


@_mutation("flip-head")
def flip_head(data: bytes, rng: random.Random) -> bytes:
    """A byte of the first 64 (headers, magic numbers) replaced."""
    return flip_at(data, rng, [rng.randrange(min(64, len(data)))])


@_mutation("flip-tail")
def flip_tail(data: bytes, rng: random.Random) -> bytes:
    """A byte of the last 256 (zip directories, trailers) replaced."""
    n = min(256, len(data))
    return flip_at(data, rng, [len(data) - 1 - rng.randrange(n)])


@_mutation("insert")
def insert(data: bytes, rng: random.Random) -> bytes:
    """1..16 random bytes inserted at a random offset."""
    at = rng.randrange(len(data) + 1)
    return data[:at] + rng.randbytes(rng.randint(1, 16)) + data[at:]


@_mutation("delete")
def delete(data: bytes, rng: random.Random) -> bytes:
    """1..16 bytes deleted at a random offset."""
    at = rng.randrange(len(data))
    return data[:at] + data[at + rng.randint(1, 16) :]


@_mutation("empty")
def empty(data: bytes, rng: random.Random) -> bytes:
    return b""


def flip_at(data: bytes, rng: random.Random, positions: Iterable[int]) -> bytes:
    out = bytearray(data)
    for p in positions:
        out[p] ^= rng.randrange(1, 256)
    return bytes(out)


def seeded_cases(prefix: str, plan: dict[str, int], seed: int = 0) -> list[tuple[str, str, int]]:
    """``(case id, mutation, seed)`` for `plan` (mutation -> how many cases), seeds derived from
    `prefix` so that adding a plan elsewhere changes nothing here."""
    base = int.from_bytes(hashlib.sha256(f"{prefix}:{seed}".encode()).digest()[:4], "big")
    out = []
    for name, count in plan.items():
        for i in range(count):
            out.append((f"{prefix}-{name}-{i}", name, base + 7919 * i + len(out)))
    return out


def mutate_bytes(data: bytes, mutation: str, seed: int) -> bytes:
    return BYTE_MUTATIONS[mutation](data, random.Random(seed))


# --- running the CLI -------------------------------------------------------------------------


@dataclass
class Outcome:
    """What a run of the CLI did: exit code, stdout, stderr, and the exception that escaped
    ``main`` in-process (its traceback's last line), if any."""

    code: int | None
    stdout: str
    stderr: str
    crash: str | None = None

    def first_line(self) -> str:
        if self.crash:
            return self.crash
        lines = self.stderr.strip().splitlines()
        if "Traceback" in self.stderr:
            return lines[-1] if lines else ""
        return lines[0] if lines else f"(exit {self.code}, nothing on stderr)"


def run_main(argv: Sequence[str]) -> Outcome:
    """``siamnet ARGV`` in this process (``siamnet.cli.main``), stdout and stderr captured."""
    from siamnet.cli import main

    out, err = io.StringIO(), io.StringIO()
    crash = None
    code: int | None
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:  # argparse
            code = exc.code if isinstance(exc.code, int) else 2
        except Exception as exc:  # noqa: BLE001 - a crash is what the test looks for
            code = None
            last = traceback.format_exception_only(type(exc), exc)[-1].strip()
            crash = last.splitlines()[0][:300]
    return Outcome(code, out.getvalue(), err.getvalue(), crash)


def run_command(argv: Sequence[str], timeout: float = 120, **kw: Any) -> Outcome:
    """``siamnet ARGV`` as a real command."""
    done = subprocess.run(
        [SIAMNET, *map(str, argv)], capture_output=True, text=True, env=ENV, timeout=timeout, **kw
    )
    return Outcome(done.returncode, done.stdout, done.stderr)


# --- checking an outcome ---------------------------------------------------------------------


def normalized(obj: Any) -> Any:
    """JSON output made comparable: floats to 6 significant digits, NaN as a string, tuples as
    lists."""
    if isinstance(obj, dict):
        return {k: normalized(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [normalized(v) for v in obj]
    if isinstance(obj, float):
        if math.isnan(obj):
            return "NaN"
        return float(f"{obj:.6g}")
    return obj


def problems(
    outcome: Outcome,
    names: Sequence[str],
    allowed: Sequence[Any],
    digest: Callable[[Any], Any] = lambda obj: obj,
) -> list[str]:
    """What is wrong with `outcome`: nothing when it is a success whose JSON output, through
    `digest`, is one of the digests `allowed`, or exit status 2 with exactly one
    ``siamnet: error:`` line naming one of `names` and no traceback."""
    if outcome.crash is not None:
        return [f"crash: {outcome.crash}"]
    err_lines = outcome.stderr.strip().splitlines()
    if "Traceback" in outcome.stderr:
        return [f"traceback: {err_lines[-1] if err_lines else ''}"]
    if outcome.code == 0:
        try:
            got = normalized(digest(json.loads(outcome.stdout)))
        except (json.JSONDecodeError, KeyError, TypeError):
            return [f"exit 0 with unexpected output: {outcome.stdout[:200]!r}"]
        found = []
        if got not in [normalized(a) for a in allowed]:
            found.append(f"exit 0 with a different answer: {_short(got)}")
        if any(line.startswith("siamnet: error") for line in err_lines):
            found.append(f"exit 0 but an error on stderr: {err_lines[0]}")
        return found
    found = []
    if outcome.code != 2:
        found.append(f"exit status {outcome.code}, expected 2")
    if len(err_lines) != 1:
        found.append(f"{len(err_lines)} lines on stderr, expected 1: {outcome.stderr[:300]!r}")
    line = err_lines[0] if err_lines else ""
    if not line.startswith("siamnet: error: "):
        found.append(f"stderr does not start with 'siamnet: error: ': {line[:200]!r}")
    elif not any(str(n) in line for n in names):
        found.append(f"message does not name {names[0]}: {line[:300]}")
    return found


def _short(obj: Any) -> str:
    text = json.dumps(obj)
    return text if len(text) < 240 else text[:240] + "..."


# --- files before and after ------------------------------------------------------------------


def snapshot(*roots: Path) -> dict[str, str]:
    """sha256 of every file under `roots` (or of each root that is a file), by path."""
    out: dict[str, str] = {}
    for root in roots:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for f in files:
            out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def changed(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """Files that were changed, removed or added between two snapshots."""
    out = [f"changed {p}" for p in before if p in after and before[p] != after[p]]
    out += [f"removed {p}" for p in before if p not in after]
    out += [f"added {p}" for p in after if p not in before]
    return out
