"""How CPU threads wait, chosen before torch loads its OpenMP runtime.

PyTorch's CPU kernels run on OpenMP threads (libgomp on Linux), which by default spin at each
barrier for a while before they sleep. On a machine where another process holds a core, a
spinning thread burns the time slice its partner needs to reach the barrier, and the step runs
several times slower than on one thread (bench/RESULTS.md, "Training beside a busy core").
With ``OMP_WAIT_POLICY=PASSIVE`` the threads sleep at once, which costs little on an idle
machine. The policy is read once, when the runtime starts, so it must be in the environment
before ``import torch``: the command line sets it first thing (`choose_wait_policy`); a
program that imports siamnet can set it the same way, before torch. A policy or spin count
already in the environment is left as it is.
"""

from __future__ import annotations

import os
import sys

#: The OpenMP wait policy the command line runs with unless the environment chooses one.
WAIT_POLICY = "PASSIVE"


def choose_wait_policy() -> bool:
    """Set ``OMP_WAIT_POLICY`` to `WAIT_POLICY` if neither it nor ``GOMP_SPINCOUNT`` is set
    and torch is not loaded yet; returns whether it was set."""
    if "torch" in sys.modules or {"OMP_WAIT_POLICY", "GOMP_SPINCOUNT"} & set(os.environ):
        return False
    os.environ["OMP_WAIT_POLICY"] = WAIT_POLICY
    return True
