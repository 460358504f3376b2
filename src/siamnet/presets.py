"""Every training default, in one place: the named recipes (the blog post's, Koch et al.'s,
the measured default, a fast one), the values every recipe shares (`RUN_DEFAULTS`) and the
fixed vocabularies of the training options (`CHOICES`).

A preset fills in the training arguments the user did not give; an argument given on the
command line always wins. `siamnet.train.TrainConfig.resolved` applies these tables and
`TrainConfig.validate` checks the result; the command line's own defaults are all ``None``.
This module imports nothing heavy, so that ``siamnet train --help`` stays fast.
"""

from __future__ import annotations

from typing import Any

from siamnet.errors import ArgumentError

#: The recipe `siamnet train` uses when no preset is named (chosen by one-shot accuracy on
#: held-out classes; see bench/RESULTS.md).
DEFAULT: dict[str, Any] = {
    "model": "conv4-map",
    "loss": "proto",
    "ways": 60,
    "epochs": 100,
    "steps_per_epoch": 100,
    "time_budget": 600.0,
    "patience": 6,
    "batch_size": 128,
    "optimizer": "adam",
    "lr": 1e-3,
    "weight_decay": 0.0,
    "schedule": "plateau",
    "augment": "none",
    "normalize": "standard",
}

#: The blog post, exactly: seed-cnn, BCE, SGD lr 0.001 momentum 0.1, 5 × 1000 × 100, raw pixels.
SEED: dict[str, Any] = {
    "model": "seed-cnn",
    "loss": "bce",
    "epochs": 5,
    "steps_per_epoch": 1000,
    "batch_size": 100,
    "optimizer": "sgd",
    "lr": 1e-3,
    "momentum": 0.1,
    "weight_decay": 0.0,
    "schedule": "none",
    "augment": "none",
    "normalize": "raw",
    "log_every": 100,
    "patience": 0,
}

#: Koch, Zemel & Salakhutdinov (2015). The paper tuned a learning rate, final momentum and L2
#: weight per layer by Bayesian optimisation and did not publish them; the values below are
#: one choice inside its search ranges (lr 1e-4..1e-1, momentum 0..1, L2 0..0.1).
KOCH: dict[str, Any] = {
    "model": "koch",
    "loss": "bce",
    "epochs": 200,
    "steps_per_epoch": 200,
    "batch_size": 128,
    "optimizer": "sgd",
    "lr": 1e-2,
    "momentum": 0.9,
    "momentum_start": 0.5,
    "momentum_ramp_epochs": 20,
    "weight_decay": 2e-4,
    "schedule": "exp:0.99",
    "augment": "affine",
    "normalize": "unit",
    "koch_init": True,
    "patience": 20,
}

#: Time to pair accuracy: the post's model and objective, with every image of a P×K batch
#: (10 classes × 10 examples) paired with every other (`--pairs batch`), Adam and bf16 autocast
#: where the CPU has AMX. It reached the post's final test pair accuracy 42× sooner than the
#: post on digits and 23× on Fashion-MNIST (bench/RESULTS.md, "Time to accuracy"). Chosen for
#: pairs of seen classes, not for one-shot accuracy on unseen ones (the default recipe's job).
FAST: dict[str, Any] = {
    "model": "seed-cnn",
    "loss": "bce",
    "pairs": "batch",
    "examples_per_class": 10,
    "batch_size": 100,
    "epochs": 10,
    "steps_per_epoch": 50,
    "optimizer": "adam",
    "lr": 2e-3,
    "weight_decay": 0.0,
    "schedule": "none",
    "augment": "none",
    "normalize": "standard",
    "patience": 0,
}

#: Values every preset shares where it sets none (a preset's own value, and a given one, win).
#: ``margin`` and ``rotate_classes`` are absent: their default belongs to the objective.
RUN_DEFAULTS: dict[str, Any] = {
    "patience": 0,
    "time_budget": 0.0,
    "momentum": 0.9,
    "momentum_ramp_epochs": 0,
    "log_every": 0,
    "koch_init": False,
    "pairs": "sampled",
    "examples_per_class": 4,
    "ways": 20,
    "shots": 1,
    "queries": 5,
    "mining": "semihard",
    "temperature": "learned",
    "val_fraction": 0.15,
    "val_classes_fraction": 0.2,
    "val_pairs": 2000,
    "val_episodes": 300,
    "val_ways": 20,
    "seed": 0,
    "device": "auto",
    "workers": 0,
    "amp": "auto",
    "memory_format": "auto",
    "out": "runs/default",
    "log": "none",
}

#: ``--proxy-lr`` when none is given, as a multiple of ``--lr``: class proxies move faster
#: than the network, as pytorch-metric-learning advises for its proxy losses.
PROXY_LR_FACTOR = 10.0

#: The fixed vocabularies of training options (the command line's choices; checked by
#: `TrainConfig.validate`). Backbones and objectives come from their registries instead.
CHOICES: dict[str, tuple[str, ...]] = {
    "optimizer": ("sgd", "adam", "adamw"),
    "augment": ("none", "affine"),
    "normalize": ("raw", "unit", "standard"),
    "pairs": ("sampled", "batch"),
    "mining": ("semihard", "hard"),
    "temperature": ("learned", "fixed"),
    "amp": ("auto", "off", "bf16", "fp16"),
    "memory_format": ("auto", "channels-last", "contiguous"),
    "log": ("none", "tensorboard"),
}

#: The evaluation protocol's defaults (`siamnet evaluate`): fixed verification pairs, episodes
#: per N and K, and their seed. Training's final summary draws the same pairs and episodes, so
#: that it and `siamnet evaluate` report the same figures for the same model and task.
EVAL_PAIRS, EVAL_EPISODES, EVAL_SEED = 10000, 1000, 0
#: Recall@K of the retrieval metrics (each image a query against all the others), as reported
#: on SOP, CUB-200 and Cars-196.
RETRIEVAL_KS = (1, 2, 4, 8)

#: Gallery search (`siamnet index`): ``exact`` (no index, every item scored by the head) and
#: the FAISS indexes a gallery is built with, saved with it and read back untrained
#: (`siamnet.gallery.faiss_index`); the methods an index is made for at search time; the
#: index options' defaults (``nlist`` about √N and ivf-pq's ``m`` depend on the gallery); and
#: how long a writer of a gallery waits for another before it is refused.
INDEX_METHODS = ("exact", "flat", "ivf-flat", "ivf-pq", "hnsw")
SEARCH_METHODS = ("exact", "rerank", "faiss", "faiss-ivf")
INDEX_DEFAULTS: dict[str, int] = {
    "nprobe": 8,
    "nbits": 8,
    "train_size": 100_000,
    "hnsw_m": 32,
    "ef_construction": 64,
    "ef_search": 64,
}
GALLERY_LOCK_WAIT_S = 600.0

PRESETS: dict[str, dict[str, Any]] = {
    "default": DEFAULT,
    "seed": SEED,
    "koch": KOCH,
    "fast": FAST,
}


def preset_values(name: str | None) -> dict[str, Any]:
    """The argument values of preset `name` (``None`` means the default recipe)."""
    key = name or "default"
    if key not in PRESETS:
        raise ArgumentError(f"--preset {name!r}: expected one of {', '.join(PRESETS)}")
    return dict(PRESETS[key])
