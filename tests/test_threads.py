"""The OpenMP wait policy the command line chooses before torch loads."""

from __future__ import annotations

import os
import subprocess
import sys

PROBE = (
    "import os, sys\n"
    "from siamnet.threads import choose_wait_policy\n"
    "{before}\n"
    "print(choose_wait_policy(), os.environ.get('OMP_WAIT_POLICY'))\n"
)


def probe(before: str = "", **env: str) -> str:
    environ = {
        k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
    }
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(before=before)],
        env={**environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


def test_passive_unless_the_environment_chooses():
    assert probe() == "True PASSIVE"
    assert probe(OMP_WAIT_POLICY="ACTIVE") == "False ACTIVE"
    assert probe(GOMP_SPINCOUNT="1000") == "False None"


def test_too_late_once_torch_is_loaded():
    assert probe(before="import torch") == "False None"


def test_the_command_line_sets_it_before_any_verb():
    code = (
        "import os, siamnet.cli\n"
        "siamnet.cli.main(['data', 'info', 'digits', '--json'])\n"
        "print(os.environ.get('OMP_WAIT_POLICY'))\n"
    )
    environ = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    result = subprocess.run(
        [sys.executable, "-c", code], env=environ, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip().splitlines()[-1] == "PASSIVE"
