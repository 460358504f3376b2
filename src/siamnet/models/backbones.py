"""Backbones: networks that map images ``[B, C, H, W]`` to embeddings ``[B, D]``.

Each backbone is built for a given number of input channels and input size and exposes
``out_dim``. A user may pass any other `torch.nn.Module` that maps images to vectors through
the Python API (see `siamnet.models.siamese.SiameseNet`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from siamnet.errors import ArgumentError


def _flat_size(features: nn.Module, in_channels: int, image_size: tuple[int, int]) -> int:
    with torch.no_grad():
        probe = torch.zeros(1, in_channels, *image_size)
        return int(features(probe).flatten(1).shape[1])


#: Every backbone here pools *before* its ReLU: ``relu(maxpool(x)) == maxpool(relu(x))``
#: (ReLU is monotone), and the ReLU then runs on a quarter of the values. Parameters keep
#: their names, so checkpoints load either way; on a CPU the training step is 1.1-1.4× faster
#: for it (bench/RESULTS.md, "Training throughput").


class SeedCNN(nn.Module):
    """The blog post's CNN: conv 32@3×3, pool, conv 64@3×3, pool, fc 120, fc 84.

    The flatten size is computed from the input size (the post hard-codes 64·5·5 for 28×28).
    """

    def __init__(self, in_channels: int = 1, image_size: tuple[int, int] = (28, 28)) -> None:
        super().__init__()
        if min(image_size) < 10:
            raise ArgumentError(f"seed-cnn needs inputs of at least 10×10, got {image_size}")
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3),
            nn.MaxPool2d(2),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3),
            nn.MaxPool2d(2),
            nn.ReLU(),
        )
        self.fc1 = nn.Linear(_flat_size(self.features, in_channels, image_size), 120)
        self.fc2 = nn.Linear(120, 84)
        self.out_dim = 84

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` -> ``[B, 84]``."""
        x = self.features(x).flatten(1)
        return self.fc2(F.relu(self.fc1(x)))


class KochNet(nn.Module):
    """Koch, Zemel & Salakhutdinov (2015), "Siamese Neural Networks for One-shot Image
    Recognition": conv 64@10×10, pool, conv 128@7×7, pool, conv 128@4×4, pool, conv 256@4×4,
    fully connected 4096 with sigmoid; ReLU after each convolution.

    On 105×105 input this is the paper's network (9216 features before the 4096 layer). On
    smaller inputs a kernel larger than its feature map is clipped to the map, and a pool of a
    1-pixel map is skipped, so the same layer stack works down to 28×28.
    """

    def __init__(self, in_channels: int = 1, image_size: tuple[int, int] = (105, 105)) -> None:
        super().__init__()
        if min(image_size) < 10:
            raise ArgumentError(f"koch needs inputs of at least 10×10, got {image_size}")
        layers: list[nn.Module] = []
        h, w = image_size
        channels = in_channels
        plan = [(64, 10, True), (128, 7, True), (128, 4, True), (256, 4, False)]
        for out_channels, kernel, pool in plan:
            kh, kw = min(kernel, h), min(kernel, w)
            layers.append(nn.Conv2d(channels, out_channels, (kh, kw)))
            h, w = h - kh + 1, w - kw + 1
            if pool and min(h, w) >= 2:
                layers.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
            layers.append(nn.ReLU())
            channels = out_channels
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(channels * h * w, 4096)
        self.out_dim = 4096

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` -> ``[B, 4096]`` in (0, 1)."""
        return torch.sigmoid(self.fc(self.features(x).flatten(1)))

    def reset_parameters_as_paper(self, generator: torch.Generator | None = None) -> None:
        """The paper's initialisation: conv weights N(0, 1e-2), biases N(0.5, 1e-2),
        fully connected weights N(0, 2e-1)."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0.0, 1e-2, generator=generator)
                nn.init.normal_(module.bias, 0.5, 1e-2, generator=generator)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, 2e-1, generator=generator)
                nn.init.normal_(module.bias, 0.5, 1e-2, generator=generator)


class Conv4(nn.Module):
    """The standard few-shot backbone (Vinyals et al. 2016; Snell et al. 2017):
    4 × [conv 3×3 64, batch norm, ReLU, max-pool 2]. Inputs of at least 16×16.

    `pools` < 4 leaves the last blocks without their max-pool, so that a spatial map survives:
    at 28×28 input, 4 pools give a 1×1×64 (64-d) embedding, 3 pools a 3×3×64 (576-d) one
    (``conv4-map``), which on classes never seen in training kept more of what tells them
    apart (bench/RESULTS.md, "Recipe search").
    """

    def __init__(
        self,
        in_channels: int = 1,
        image_size: tuple[int, int] = (28, 28),
        width: int = 64,
        pools: int = 4,
    ) -> None:
        super().__init__()
        if not 0 <= pools <= 4:
            raise ArgumentError(f"conv4 has 4 blocks; pools must be 0..4, got {pools}")
        if min(image_size) < 2**pools:
            raise ArgumentError(
                f"conv4 needs inputs of at least {2**pools}×{2**pools} with {pools} max-pools, "
                f"got {image_size}"
            )
        blocks: list[nn.Module] = []
        channels = in_channels
        for block in range(4):
            blocks += [nn.Conv2d(channels, width, 3, padding=1), nn.BatchNorm2d(width)]
            if block < pools:
                blocks.append(nn.MaxPool2d(2))
            blocks.append(nn.ReLU())
            channels = width
        self.features = nn.Sequential(*blocks)
        self.out_dim = _flat_size(self.features, in_channels, image_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` -> ``[B, 64·(H/2^pools)·(W/2^pools)]`` (floored at each pool)."""
        return self.features(x).flatten(1)


def conv4_map(in_channels: int = 1, image_size: tuple[int, int] = (28, 28)) -> nn.Module:
    """Conv-4 without its last max-pool: a 3×3×64 (576-d) map at 28×28 input."""
    return Conv4(in_channels, image_size, pools=3)


class Conv4Pooled(nn.Module):
    """Conv-4 with three max-pools (as ``conv4-map``), its last map average-pooled to 3×3:
    a 576-d embedding whatever the input size. At 28×28 the map already is 3×3, so it computes
    what ``conv4-map`` computes; on larger images (64 px: an 8×8 map, 4,096-d for conv4-map)
    the embedding keeps its size, and with it the scale of the distances between embeddings.
    The backbone of the default recipe on photographs (`siamnet.presets.is_photo`)."""

    def __init__(self, in_channels: int = 3, image_size: tuple[int, int] = (64, 64)) -> None:
        super().__init__()
        self.features = Conv4(in_channels, image_size, pools=3).features
        self.pool = nn.AdaptiveAvgPool2d(POOLED_MAP)
        self.out_dim = 64 * POOLED_MAP[0] * POOLED_MAP[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` (H, W >= 8) -> ``[B, 576]``."""
        return self.pool(self.features(x)).flatten(1)


#: The map `Conv4Pooled` pools to: conv4-map's at 28×28.
POOLED_MAP = (3, 3)


def resnet18(in_channels: int = 1, image_size: tuple[int, int] = (28, 28)) -> nn.Module:
    """torchvision's ResNet-18 (untrained) with a first convolution for `in_channels` and
    the classifier removed: 512-d embeddings. Needs the optional ``vision`` extra."""
    try:
        from torchvision.models import resnet18 as tv_resnet18
    except ImportError as exc:
        raise ArgumentError(
            "the resnet18 backbone needs torchvision: pip install 'siamnet[vision]'"
        ) from exc
    net = tv_resnet18(weights=None)
    net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    if min(image_size) < 64:  # keep small images from vanishing before the last stage
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    net.fc = nn.Identity()
    net.out_dim = 512
    return net


def resnet18_imagenet(in_channels: int = 3, image_size: tuple[int, int] = (224, 224)) -> nn.Module:
    """ResNet-18 laid out for torchvision's ImageNet weights (``--model resnet18
    --pretrained``, see `siamnet.models.pretrained`): the 7×7 first convolution is kept so that
    its filters can be loaded; on images under 64 pixels it runs at stride 1 without the
    max-pool, so that small images keep a spatial map until the last stage. 512-d embeddings."""
    try:
        from torchvision.models import resnet18 as tv_resnet18
    except ImportError as exc:
        raise ArgumentError(
            "the resnet18 backbone needs torchvision: pip install 'siamnet[vision]'"
        ) from exc
    net = tv_resnet18(weights=None)
    small = min(image_size) < 64
    net.conv1 = nn.Conv2d(
        in_channels, 64, kernel_size=7, stride=1 if small else 2, padding=3, bias=False
    )
    if small:
        net.maxpool = nn.Identity()
    net.fc = nn.Identity()
    net.out_dim = 512
    return net


BACKBONES: dict[str, Callable[[int, tuple[int, int]], nn.Module]] = {
    "seed-cnn": SeedCNN,
    "koch": KochNet,
    "conv4": Conv4,
    "conv4-map": conv4_map,
    "conv4-pool": Conv4Pooled,
    "resnet18": resnet18,
    "resnet18-imagenet": resnet18_imagenet,
}


def register_backbone(
    name: str, factory: Callable[[int, tuple[int, int]], nn.Module]
) -> Callable[[int, tuple[int, int]], nn.Module]:
    """Make ``factory(in_channels, (H, W)) -> nn.Module`` known as `name` (to ``--model`` and
    to checkpoints that record it); returns `factory`, so it works as a decorator's body."""
    BACKBONES[name] = factory
    return factory


def is_backbone_name(name: str) -> bool:
    """A registered backbone, a timm model (``timm:NAME``), or a class named
    ``package.module:Class`` (how a checkpoint records a backbone given as a module through
    the Python API)."""
    return name in BACKBONES or (":" in name and not name.startswith(":"))


#: The prefix of a timm model's name: ``--model timm:resnet18`` (any name of
#: ``timm.list_models()``, with or without a pretrained tag such as ``resnet18.a1_in1k``).
TIMM_PREFIX = "timm:"


def is_timm_name(name: object) -> bool:
    """Whether `name` names a timm model (``timm:NAME``)."""
    return isinstance(name, str) and name.startswith(TIMM_PREFIX)


def import_timm(name: str) -> Any:
    """The timm package, or a one-line `ArgumentError` naming the extra that installs it."""
    try:
        import timm
    except ImportError as exc:
        raise ArgumentError(
            f"--model {name}: timm models need timm: pip install 'siamnet[vision]'"
        ) from exc
    return timm


def check_timm_name(name: str) -> str:
    """The timm model name inside ``timm:NAME``, checked against timm's registry (one line
    naming how to list the models otherwise); imports timm, builds nothing."""
    timm = import_timm(name)
    model = name[len(TIMM_PREFIX) :]
    if not model or not timm.is_model(model):
        raise ArgumentError(
            f"--model {name}: timm has no model {model!r} (list them with: python -c "
            f"\"import timm; print(timm.list_models('*{model.split('.')[0][:12]}*'))\")"
        )
    return model


def timm_pretrained_cfg(name: str) -> dict[str, Any]:
    """The pretrained configuration timm holds for ``timm:NAME`` (input size, mean, std, where
    its weights are published), as a plain dict; builds nothing."""
    timm = import_timm(name)
    model = check_timm_name(name)
    cfg = timm.models.get_pretrained_cfg(model, allow_unregistered=True)
    return cfg.to_dict() if cfg is not None else {}


def timm_backbone(
    name: str,
    in_channels: int,
    image_size: tuple[int, int],
    weights_file: str | None = None,
) -> nn.Module:
    """``timm.create_model(NAME, num_classes=0, in_chans=in_channels)``: a timm model without
    its classifier (pooled features ``[B, D]``). Models with a fixed input size (vision
    transformers) are built for `image_size`. With `weights_file`, timm loads it as the
    model's pretrained weights (classifier dropped, first layer adapted to `in_channels`);
    see `siamnet.models.pretrained.load_timm_pretrained`, which checks that they fit."""
    timm = import_timm(name)
    model = check_timm_name(name)
    kwargs: dict[str, Any] = {"num_classes": 0, "in_chans": in_channels}
    if timm_pretrained_cfg(name).get("fixed_input_size"):
        kwargs["img_size"] = tuple(image_size)
    if weights_file is not None:
        kwargs["pretrained"] = True
        kwargs["pretrained_cfg_overlay"] = {"file": str(weights_file)}
    try:
        net = timm.create_model(model, **kwargs)
    except (TypeError, ValueError, AssertionError) as exc:
        reason = " ".join(str(exc).split())[:200]
        raise ArgumentError(
            f"--model {name}: timm cannot build it for {in_channels} channel(s) at "
            f"{image_size[0]}×{image_size[1]} ({reason})"
        ) from exc
    return net


def build_backbone(name: str, in_channels: int, image_size: tuple[int, int]) -> nn.Module:
    """A backbone by name, for `in_channels` and ``image_size = (H, W)``; has ``out_dim``.

    ``timm:NAME`` builds a timm model without its classifier (`timm_backbone`, untrained).

    A ``package.module:Class`` name (one's own module, recorded by a checkpoint) is imported
    and built with no arguments; a class that needs arguments, or lives in a notebook or
    script, must be registered (`register_backbone`) before its checkpoint is loaded."""
    if name in BACKBONES:
        net = BACKBONES[name](in_channels, tuple(image_size))
    elif is_timm_name(name):
        net = timm_backbone(name, in_channels, tuple(image_size))
    elif is_backbone_name(name):
        net = _build_own_class(name)
    else:
        raise ArgumentError(
            f"--model {name!r}: expected one of {', '.join(BACKBONES)} or timm:NAME"
        )
    return with_out_dim(net, in_channels, image_size)


def _build_own_class(name: str) -> nn.Module:
    import importlib

    module_name, _, qualname = name.partition(":")
    how = (
        f"register it first: siamnet.register_backbone({name!r}, lambda in_channels, "
        "image_size: YourNet(...)), or load with load_checkpoint(path, model=...)"
    )
    try:
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise ArgumentError(f"backbone {name!r} is not importable here ({exc}); {how}") from exc
    try:
        return obj()
    except TypeError as exc:
        raise ArgumentError(f"backbone {name!r} needs arguments to build ({exc}); {how}") from exc


def with_out_dim(net: nn.Module, in_channels: int, image_size: tuple[int, int]) -> nn.Module:
    """`net` with ``out_dim``, found by embedding one blank image where it has none."""
    if not hasattr(net, "out_dim"):
        was_training = net.training
        with torch.no_grad():
            out = net.eval()(torch.zeros(1, in_channels, *image_size))
        net.train(was_training)
        if out.dim() != 2:
            raise ArgumentError(
                f"backbone {type(net).__name__}: must map images [B, C, H, W] to vectors "
                f"[B, D], gave {list(out.shape)}"
            )
        net.out_dim = int(out.shape[1])
    return net
