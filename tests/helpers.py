"""Helpers shared by the tests: the installed command, its environment, and what a refusal
looks like (exit status 2, one ``siamnet: error:`` line, no traceback)."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from siamnet.models.siamese import ModelSpec

_BESIDE_PYTHON = Path(sys.executable).parent / "siamnet"  # the command of this environment
SIAMNET = str(_BESIDE_PYTHON) if _BESIDE_PYTHON.exists() else shutil.which("siamnet") or "siamnet"
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def siamnet(
    *args: object,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    preexec_fn: Callable[[], object] | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess:
    """The installed command run with `args` (`env` added to `ENV`), output captured."""
    return subprocess.run(
        [SIAMNET, *map(str, args)],
        capture_output=True,
        text=True,
        env={**ENV, **(env or {})},
        cwd=cwd,
        timeout=timeout,
        preexec_fn=preexec_fn,
    )


def refused(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit status 2 with one ``siamnet: error:`` line on stderr holding every fragment, and
    no traceback; returns the line."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("siamnet: error: "), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def one_error_line(result: subprocess.CompletedProcess) -> str:
    """Exit status 2 and exactly one ``siamnet: error:`` line on stderr, no traceback."""
    return refused(result)


#: The built-in digits' classes that tests hold out of training.
DIGITS_UNSEEN = ["6", "7", "8", "9"]


def digits_metadata(classes: list[str], **args) -> dict:
    """Checkpoint metadata of a contrastive conv4 model trained on `classes` of ``digits``
    with training arguments `args`."""
    spec = ModelSpec(model="conv4", loss="contrastive")
    return {
        "model_spec": spec.to_dict(),
        "classes": classes,
        "threshold": -0.5,
        "threshold_source": "default",
        "default_threshold": [-0.5, "distance 0.5, half the contrastive margin"],
        "unseen_classes": [],
        "training_args": {"data": "digits", "seed": 0, "margin": 1.0, **args},
    }


def limit_file_size(limit: int) -> Callable[[], None]:
    """A ``preexec_fn``: files of at most `limit` bytes, so that a write past it fails with
    EFBIG as on a full disk (SIGXFSZ, which would kill the process, is ignored across exec)."""

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply
