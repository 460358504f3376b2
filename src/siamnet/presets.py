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
    "loader_workers": 2,
    "cache": "auto",
    "amp": "auto",
    "memory_format": "auto",
    "freeze_bn": False,
    "out": "runs/default",
    "log": "none",
    # test-time centring on the mean training embedding (SimpleShot's CL2N): the mean is
    # stored in every checkpoint either way, so `evaluate --centring on|off` measures both;
    # off until the recipe comparison has measured it
    "centring": "off",
}

#: ``--backbone-lr-factor`` when none is given: the backbone's learning rate as a multiple of
#: ``--lr`` (the head, the temperature and the proxies keep ``--lr``/``--proxy-lr``). A
#: pretrained backbone (``--pretrained``) is fine-tuned at a tenth of the rate, the usual
#: practice for ImageNet features, so that the first steps of a fresh head do not wreck them;
#: a backbone trained from scratch learns at the full rate.
BACKBONE_LR_FACTOR = 1.0
PRETRAINED_BACKBONE_LR_FACTOR = 0.1

#: Photographs (`is_photo`): images in colour, or with a shorter side above `PHOTO_MIN_SIDE`
#: pixels. On them the default recipe's conv4-map diverged: its embedding grows with the image
#: (4,096-d at 64 px) and so do squared distances between embeddings; on 64-px colour photos
#: the loss was 122 in the first epoch and one-shot accuracy stayed at chance. There, unless
#: ``--model`` is given, the default recipe trains `PHOTO_MODEL` (576-d whatever the image
#: size) on unit-length embeddings, whose squared distances lie in [0, 4], with the softmax
#: temperature starting at `PHOTO_TEMPERATURE` (logits ``-d²/T``: 16 × the cosine, plus a
#: constant, as normsoftmax's scale) and learned from there. A network made for photographs
#: (`is_photo_network`: ``timm:NAME``, ``resnet18``) given with ``--model`` trains the same way
#: (its own backbone, not `PHOTO_MODEL`): trained as a 60-way 5-query conv4-map run, with
#: squared distances between raw 512-d features, timm:resnet10t reached 0.56 20-way 1-shot
#: where the photo recipe's conv4-pool reached 0.87 (bench/RESULTS.md). ``--photo`` asks for
#: unit-length embeddings and that temperature with any model, ``--no-photo`` for neither.
#: 28-px grey images (digits, glyphs) keep the recipe as it was measured.
PHOTO_MIN_SIDE = 32
PHOTO_MODEL = "conv4-pool"
PHOTO_TEMPERATURE = 0.125
#: On photographs the default recipe's episodes are `PHOTO_WAYS`-way with `PHOTO_QUERIES`
#: queries per class, unless ``--ways`` or ``--queries`` is given: a 60-way 5-query episode
#: holds 360 images, whose activations through conv4-pool took 3.5-6.2 GB at 96 px and grow
#: with the square of the side (out of memory at 224 px on a 24 GB machine); 20 × 3 = 60
#: images take a sixth of that.
PHOTO_WAYS, PHOTO_QUERIES = 20, 2


def is_photo_network(model: object) -> bool:
    """Whether ``--model`` `model` is a network made for photographs (`PHOTO_NETWORKS`), which
    the default recipe trains as it trains its own on photographs."""
    return isinstance(model, str) and (model == "resnet18" or model.startswith("timm:"))


def is_photo(channels: int, image_size: tuple[int, int]) -> bool:
    """Whether images of `channels` and ``(H, W)`` are trained as photographs (see
    `PHOTO_MIN_SIDE`): colour, or a shorter side above `PHOTO_MIN_SIDE` pixels."""
    return channels != 1 or min(image_size) > PHOTO_MIN_SIDE


#: ``--proxy-lr`` when none is given, as a multiple of ``--lr``: class proxies move faster
#: than the network, as pytorch-metric-learning advises for its proxy losses.
PROXY_LR_FACTOR = 10.0

#: The fixed vocabularies of training options (the command line's choices; checked by
#: `TrainConfig.validate`). Backbones and objectives come from their registries instead.
CHOICES: dict[str, tuple[str, ...]] = {
    "optimizer": ("sgd", "adam", "adamw"),
    "augment": ("none", "affine", "photo"),
    "normalize": ("raw", "unit", "standard"),
    "pairs": ("sampled", "batch"),
    "mining": ("semihard", "hard"),
    "temperature": ("learned", "fixed"),
    "amp": ("auto", "off", "bf16", "fp16"),
    "memory_format": ("auto", "channels-last", "contiguous"),
    "log": ("none", "tensorboard"),
    "centring": ("on", "off"),
    "cache": ("auto", "on", "off"),
}

#: ``--cache auto`` holds a folder's images decoded in memory (at the training size) when they
#: take at most this many GiB and at most `CACHE_MEMORY_FRACTION` of the memory available;
#: larger folders are read from disk per batch (by ``--loader-workers`` processes).
CACHE_LIMIT_GB = 2.0
CACHE_MEMORY_FRACTION = 0.5
#: A folder of images of several sizes is fitted, when no ``--image-size`` is given, to a
#: square of the median of their shorter sides, at most this many pixels a side.
FOLDER_SIDE_CAP = 224

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
