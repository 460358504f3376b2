"""`siamnet train`: train a Siamese network (argument parsing only; see siamnet.train)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from siamnet.cli.common import (
    add_quiet,
    add_verb,
    parse_duration,
    parse_image_size,
    parse_name_list,
    print_json,
)
from siamnet.presets import (
    CACHE_LIMIT_GB,
    CHOICES,
    PHOTO_MIN_SIDE,
    PHOTO_MODEL,
    PRESETS,
    RUN_DEFAULTS,
)


class RegistryNames:
    """The names in a registry, looked up only when argparse checks a value or prints ``--help``
    (so that parsing a command line does not import torch for nothing)."""

    def __init__(self, module: str, attribute: str) -> None:
        self.module, self.attribute = module, attribute

    def names(self) -> list[str]:
        import importlib

        return list(getattr(importlib.import_module(self.module), self.attribute))

    def __contains__(self, name: object) -> bool:
        return name in self.names()

    def __iter__(self):
        return iter(self.names())


class BackboneNames(RegistryNames):
    """The registered backbones, and any ``timm:NAME`` (checked against timm's registry by
    `TrainConfig.validate`)."""

    def __contains__(self, name: object) -> bool:
        return (isinstance(name, str) and name.startswith("timm:")) or super().__contains__(name)

    def __iter__(self):
        return iter([*self.names(), "timm:NAME"])


BACKBONE_NAMES = BackboneNames("siamnet.models.backbones", "BACKBONES")
OBJECTIVE_NAMES = RegistryNames("siamnet.objectives", "OBJECTIVES")


def default_of(name: str) -> str:
    """``(default: VALUE)`` of a run-wide default, for a help text."""
    return f"(default: {RUN_DEFAULTS[name]})"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_verb(
        subparsers,
        "train",
        "Train a Siamese network and report pair and one-shot accuracy.",
        "siamnet train --out runs/digits            # built-in digits, 6-9 held out\n"
        "  siamnet train --data mnist_train.csv --test-data mnist_test.csv --preset seed "
        "--out runs/post\n"
        "  torchrun --nproc_per_node=2 -m siamnet train --out runs/ddp   # data-parallel",
    )
    d = p.add_argument_group("data")
    d.add_argument(
        "--data",
        help="data SPEC: digits, mnist, fashion-mnist, omniglot, or a path "
        "(default: digits with classes 6,7,8,9 held out)",
    )
    d.add_argument("--test-data", help="a separate test SPEC (e.g. the post's mnist_test.csv)")
    d.add_argument(
        "--eval-classes",
        type=parse_name_list,
        help="comma-separated class names held out of training for one-shot testing",
    )
    d.add_argument("--eval-fraction", type=float, help="fraction of classes held out (seeded)")
    d.add_argument("--image-size", type=parse_image_size, help="HxW to resize images to")
    m = p.add_argument_group("model and objective")
    m.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help="a named recipe; flags override it "
        "(seed: the blog post exactly; koch: Koch et al. 2015)",
    )
    m.add_argument(
        "--model",
        choices=BACKBONE_NAMES,
        metavar="NAME",
        help=f"the backbone: %(choices)s (default recipe: {PRESETS['default']['model']}; "
        f"{PHOTO_MODEL} on photographs, see --photo)",
    )
    m.add_argument(
        "--pretrained",
        nargs="?",
        const="imagenet",
        metavar="PATH",
        help="resnet18: start from torchvision's ImageNet weights; timm:NAME: from the weights "
        "timm publishes for NAME; read from the local Hugging Face or torch hub cache (never "
        "downloaded) or from PATH (a .safetensors file or a torch state dict); inputs get the "
        "weights' normalisation",
    )
    m.add_argument(
        "--backbone-lr-factor",
        type=float,
        metavar="F",
        help="the backbone learns at F × --lr, the head and temperature at --lr (default: 0.1 "
        "with --pretrained, else 1)",
    )
    m.add_argument(
        "--freeze-bn",
        action=argparse.BooleanOptionalAction,
        help="keep the backbone's batch-norm statistics as they are (pretrained ones) and "
        f"normalise with them in training too {default_of('freeze_bn')}",
    )
    m.add_argument(
        "--photo",
        action=argparse.BooleanOptionalAction,
        help="unit-length embeddings, softmax temperature starting at 1/8 (by default on for "
        f"colour images or images over {PHOTO_MIN_SIDE} px, with {PHOTO_MODEL} in place of "
        f"{PRESETS['default']['model']} unless --model is given; a given timm:NAME or resnet18 "
        "trains this way too; see siamnet/presets.py)",
    )
    m.add_argument(
        "--loss",
        choices=OBJECTIVE_NAMES,
        metavar="NAME",
        help=f"the objective: %(choices)s (default recipe: {PRESETS['default']['loss']})",
    )
    m.add_argument(
        "--margin",
        type=float,
        help="margin of contrastive (default 1), triplet (0.2), cosface (0.35, on the cosine) "
        "and arcface (0.5 radians, on the angle)",
    )
    m.add_argument(
        "--scale",
        type=float,
        help="normsoftmax, cosface, arcface: the scale of the cosine logits (default 16)",
    )
    m.add_argument(
        "--proxy-lr",
        type=float,
        help="normsoftmax, cosface, arcface: learning rate of the class proxies (default 10 × "
        "--lr)",
    )
    m.add_argument(
        "--mining",
        choices=CHOICES["mining"],
        help=f"triplet negatives mined in each batch {default_of('mining')}",
    )
    m.add_argument(
        "--pairs",
        choices=CHOICES["pairs"],
        help="bce and contrastive: pairs drawn one by one as in the blog post (sampled), or every "
        "pair inside P×K batches of --batch-size images (batch; each image embedded once "
        "serves in many pairs)",
    )
    m.add_argument(
        "--examples-per-class",
        type=int,
        help="K of P×K batches (triplet, --pairs batch; default 4)",
    )
    m.add_argument(
        "--ways",
        type=int,
        help="classes per training episode (proto; default recipe 60, capped at the training "
        "classes; otherwise 20)",
    )
    m.add_argument(
        "--shots", type=int, help=f"support images per class (proto) {default_of('shots')}"
    )
    m.add_argument(
        "--queries", type=int, help=f"query images per class (proto) {default_of('queries')}"
    )
    m.add_argument(
        "--rotate-classes",
        action=argparse.BooleanOptionalAction,
        help="add each training class rotated by 90, 180 and 270 degrees as three new "
        "classes (the Omniglot practice; by default on with --loss proto when the data has "
        "at least 20 training classes)",
    )
    m.add_argument(
        "--temperature",
        choices=CHOICES["temperature"],
        help=f"proto: a learned or a fixed (1) softmax temperature {default_of('temperature')}",
    )
    m.add_argument(
        "--normalize",
        choices=CHOICES["normalize"],
        help="input scaling: raw 0..255, unit 0..1, standard per-channel mean/std",
    )
    m.add_argument(
        "--centring",
        choices=CHOICES["centring"],
        help="test-time centring: embeddings minus the mean training embedding (computed once "
        "when training ends and stored in the checkpoint), scaled to unit length, in every "
        "command and export; not with the learned-weight l1 head (bce) "
        f"{default_of('centring')}",
    )
    o = p.add_argument_group("optimisation")
    o.add_argument(
        "--epochs",
        type=int,
        help="number of epochs (the default recipe: at most 100, ended earlier by --patience or "
        "--time-budget; given by hand, exactly this many unless those are given too)",
    )
    o.add_argument("--steps-per-epoch", type=int)
    o.add_argument(
        "--time-budget",
        type=parse_duration,
        metavar="SECONDS",
        help="stop before an epoch that would end past this much wall time: 600, 90s, 10m, 1h; "
        "0 for none (default recipe: 10m, unless --epochs or --steps-per-epoch is given)",
    )
    o.add_argument(
        "--batch-size",
        type=int,
        help="pairs (bce, contrastive with --pairs sampled) or images (triplet, --pairs batch)",
    )
    o.add_argument("--optimizer", choices=CHOICES["optimizer"])
    o.add_argument("--lr", type=float)
    o.add_argument("--momentum", type=float, help="SGD momentum")
    o.add_argument("--weight-decay", type=float)
    o.add_argument(
        "--schedule",
        help="none, cosine, step, exp:GAMMA (per epoch, over --epochs) or plateau (halve the "
        "learning rate after 2 epochs without better validation one-shot accuracy)",
    )
    o.add_argument(
        "--augment",
        choices=CHOICES["augment"],
        help="affine: random affine distortions on the device (Koch et al.); photo: random "
        "resized crop, horizontal flip and colour jitter, per image, on the device",
    )
    o.add_argument(
        "--patience",
        type=int,
        help="stop after this many epochs without better validation one-shot accuracy",
    )
    r = p.add_argument_group("run")
    r.add_argument(
        "--config",
        metavar="FILE",
        help="training arguments from a JSON or YAML file, in the format of a run's "
        "training_args (what --print-config writes); flags given here win",
    )
    r.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved, checked configuration as JSON and exit without training",
    )
    r.add_argument("--out", help=f"run folder {default_of('out')}")
    r.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing run folder (only a siamnet run folder; the old run is kept "
        "until the new one has written its first checkpoint)",
    )
    r.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue a stopped run from last.pt with its own arguments (only --epochs, "
        "--time-budget, --patience, --device, --workers, --loader-workers, --cache and --quiet "
        "may be given anew)",
    )
    r.add_argument("--seed", type=int, help=default_of("seed"))
    r.add_argument("--device", help=f"auto, cpu, cuda, cuda:N or mps {default_of('device')}")
    r.add_argument(
        "--workers",
        type=int,
        help="CPU threads for computation (0: PyTorch's default); batches are drawn "
        "on tensors in the training process (see --loader-workers for images read from disk) "
        f"{default_of('workers')}",
    )
    r.add_argument(
        "--loader-workers",
        type=int,
        metavar="N",
        help="processes that decode the images of each batch when a folder is read from disk "
        "(--cache); the batches are drawn in the training process, so the run is the same "
        f"with any number (0: decode in the training process) {default_of('loader_workers')}",
    )
    r.add_argument(
        "--cache",
        choices=CHOICES["cache"],
        help="hold a folder's images decoded in memory at the training size (on), read them "
        "from disk per batch (off), or hold them when they fit (auto: at most "
        f"{CACHE_LIMIT_GB:g} GB and half the available memory) {default_of('cache')}",
    )
    r.add_argument(
        "--amp",
        choices=CHOICES["amp"],
        help="mixed precision of the training step (auto: bf16 on CUDA, and on CPUs with AMX "
        f"tiles, where it is faster; off elsewhere) {default_of('amp')}",
    )
    r.add_argument("--compile", action="store_true", help="torch.compile the model")
    r.add_argument(
        "--memory-format",
        choices=CHOICES["memory_format"],
        help="layout of convolution activations (auto: channels-last on CPU and CUDA) "
        f"{default_of('memory_format')}",
    )
    r.add_argument(
        "--log",
        choices=CHOICES["log"],
        help="experiment logging: tensorboard writes every epoch's metrics and the curves to "
        f"RUN/tensorboard (needs the tensorboard extra) {default_of('log')}",
    )
    r.add_argument("--json", action="store_true", help="print the final summary as JSON")
    add_quiet(r)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from siamnet.train import TrainConfig, fit

    fields = set(TrainConfig.__dataclass_fields__)
    config = TrainConfig(**{k: v for k, v in vars(args).items() if k in fields})
    if args.config:  # the file, with what the command line gives on top
        config = dataclasses.replace(TrainConfig.from_file(args.config), **config.given())
    if args.print_config:
        resolved = config.resolved().validate() if not config.resume else config
        print_json(resolved.to_json())
        return 0
    summary = fit(config)
    if not summary:  # not rank 0
        return 0
    if args.json:
        json.dump(summary, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(format_summary(summary))
    return 0


#: The summary's line on test-time centring, by the model's centring state.
CENTRING_LINES = {
    "on": "centring: on (embeddings minus the mean training embedding, at unit length, in "
    "every command and export; the figures above are centred)",
    "off": "centring: off (the mean training embedding is stored: siamnet evaluate {run} "
    "--centring on measures it)",
    "none": "centring: not applicable (the head learned its weights on uncentred embeddings)",
}


def format_summary(s: dict) -> str:
    lines = [
        f"run: {s['run']} (best epoch {s['best_epoch']} of {s['epochs_run']}, stopped by "
        f"{s.get('stopped_by', 'epochs')}, {s['train_seconds']:.0f}s training, "
        f"{s['images_seen']} images seen)"
    ]
    if s.get("planned_epochs"):
        lines.append(
            f"length: {s['planned_epochs']} epochs, planned from the first epoch's time to fill "
            f"the {s['time_budget']:.0f}s budget (the cosine schedule decays over them)"
        )
    if "test_pair_acc" in s:
        lines.append(
            f"test pair accuracy (test split, classes {s['test_classes']}): "
            f"{s['test_pair_acc']:.4f}"
            f"  ROC AUC {s['test_auc']:.4f}"
        )
    if "oneshot" in s:
        o = s["oneshot"]
        unseen = s["unseen_classes"]
        lines.append(
            f"{o['ways']}-way one-shot accuracy on unseen classes "
            f"({', '.join(unseen[:10])}{' ...' if len(unseen) > 10 else ''}"
            f"): {o['accuracy']:.4f} ± {o['ci95']:.4f} (95% CI, {o['episodes']} episodes; "
            f"chance {1 / o['ways']:.3f})"
        )
        lines.append(f"pair accuracy on unseen classes: {s['unseen_pair_acc']:.4f}")
    lines.append(
        f"threshold: {s['threshold']:.4f} (best accuracy on validation pairs of "
        f"{s['threshold_tuned_on']})"
    )
    if s.get("centring") in CENTRING_LINES:
        lines.append(CENTRING_LINES[s["centring"]].format(run=s["run"]))
    if "unseen_far" in s:
        lines.append(
            f"at this threshold on unseen classes: false accepts {s['unseen_far']:.3f}, "
            f"false rejects {s['unseen_frr']:.3f}"
        )
    if s.get("val_protocol") != "held-out classes":
        lines.append(
            "note: the threshold was tuned on classes seen in training; before comparing "
            f"images of new classes, calibrate it on them: siamnet calibrate {s['run']} "
            "--data NEW_CLASSES"
        )
    return "\n".join(lines)
