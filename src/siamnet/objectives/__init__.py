"""Objectives: one class per loss, owning its sampler, step, head kind and curve label.

The training loop knows no loss names: it asks `get_objective(cfg.loss)` (or uses the
objective passed to `siamnet.train.fit`) for batches and the loss of each step.
"""

from __future__ import annotations

from siamnet.errors import ArgumentError
from siamnet.objectives.base import (
    Batch,
    Fetch,
    Objective,
    ObjectiveSettings,
    Sampler,
    TrainingModel,
    base_module,
    objective_parameters,
)
from siamnet.objectives.pairs import BCEObjective, ContrastiveObjective, PairObjective
from siamnet.objectives.proto import ProtoObjective
from siamnet.objectives.proxy import (
    ArcFaceObjective,
    CosFaceObjective,
    NormSoftmaxObjective,
    ProxyObjective,
)
from siamnet.objectives.triplet import TripletObjective

#: Objectives by ``--loss`` name.
OBJECTIVES: dict[str, Objective] = {
    o.name: o
    for o in (
        BCEObjective(),
        ContrastiveObjective(),
        TripletObjective(),
        ProtoObjective(),
        NormSoftmaxObjective(),
        CosFaceObjective(),
        ArcFaceObjective(),
    )
}


def register_objective(objective: Objective) -> Objective:
    """Make `objective` known by its name (to ``--loss``, and to checkpoints that record it)."""
    OBJECTIVES[objective.name] = objective
    return objective


def get_objective(name: str | Objective) -> Objective:
    """The objective called `name` (an `Objective` is returned as it is)."""
    if isinstance(name, Objective):
        return name
    if name not in OBJECTIVES:
        raise ArgumentError(f"--loss {name!r}: expected one of {', '.join(OBJECTIVES)}")
    return OBJECTIVES[name]


__all__ = [
    "OBJECTIVES",
    "ArcFaceObjective",
    "CosFaceObjective",
    "NormSoftmaxObjective",
    "ProxyObjective",
    "TrainingModel",
    "objective_parameters",
    "BCEObjective",
    "Batch",
    "ContrastiveObjective",
    "Fetch",
    "Objective",
    "ObjectiveSettings",
    "PairObjective",
    "ProtoObjective",
    "Sampler",
    "TripletObjective",
    "base_module",
    "get_objective",
    "register_objective",
]
