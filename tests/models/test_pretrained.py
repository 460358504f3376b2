"""ImageNet weights for resnet18: found locally or refused in one line, first layer adapted."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import torch

from siamnet.errors import ArgumentError
from siamnet.models.pretrained import (
    RESNET18_IMAGENET_FILE,
    find_resnet18_weights,
    imagenet_normalization,
    load_resnet18_weights,
)

from helpers import SIAMNET


def fake_weights(path: Path) -> dict[str, torch.Tensor]:
    state = {
        "conv1.weight": torch.randn(64, 3, 7, 7),
        "bn1.weight": torch.ones(64),
        "fc.weight": torch.randn(1000, 512),
        "fc.bias": torch.zeros(1000),
    }
    torch.save(state, path)
    return state


def test_weights_are_looked_for_in_the_hub_cache_and_never_downloaded(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(ArgumentError) as info:
        find_resnet18_weights()
    message = str(info.value)
    assert str(tmp_path / "hub" / "checkpoints" / RESNET18_IMAGENET_FILE) in message
    assert "download.pytorch.org" in message and "\n" not in message
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    fake_weights(tmp_path / "hub" / "checkpoints" / RESNET18_IMAGENET_FILE)
    assert find_resnet18_weights().name == RESNET18_IMAGENET_FILE


def test_a_path_or_a_folder_can_be_given(tmp_path):
    fake_weights(tmp_path / RESNET18_IMAGENET_FILE)
    assert find_resnet18_weights(tmp_path) == tmp_path / RESNET18_IMAGENET_FILE
    assert find_resnet18_weights(tmp_path / RESNET18_IMAGENET_FILE).is_file()
    with pytest.raises(ArgumentError, match="no such weight file"):
        find_resnet18_weights(tmp_path / "nothing.pth")


def test_first_layer_summed_over_rgb_for_grey_and_classifier_dropped(tmp_path):
    state = fake_weights(tmp_path / "w.pth")
    grey = load_resnet18_weights(tmp_path / "w.pth", in_channels=1)
    assert grey["conv1.weight"].shape == (64, 1, 7, 7) and not any(
        k.startswith("fc.") for k in grey
    )
    torch.testing.assert_close(grey["conv1.weight"], state["conv1.weight"].sum(1, keepdim=True))
    colour = load_resnet18_weights(tmp_path / "w.pth", in_channels=3)
    torch.testing.assert_close(colour["conv1.weight"], state["conv1.weight"])
    # a grey image (R = G = B) gives the same first-layer response either way
    x = torch.rand(2, 1, 16, 16)
    conv = torch.nn.functional.conv2d
    torch.testing.assert_close(
        conv(x, grey["conv1.weight"]), conv(x.expand(-1, 3, -1, -1), colour["conv1.weight"])
    )


def test_files_that_are_not_resnet_weights_are_refused(tmp_path):
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(ArgumentError, match="not a ResNet-18 state dict"):
        load_resnet18_weights(tmp_path / "list.pth", 1)
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(ArgumentError, match="not a readable weight file"):
        load_resnet18_weights(tmp_path / "junk.pth", 1)
    torch.save({"conv1.weight": torch.randn(64, 1, 7, 7)}, tmp_path / "grey.pth")
    with pytest.raises(ArgumentError, match=r"expected \[64, 3, 7, 7\]"):
        load_resnet18_weights(tmp_path / "grey.pth", 1)


def test_imagenet_normalization_for_grey_and_colour():
    assert imagenet_normalization(3)["mean"] == [0.485, 0.456, 0.406]
    grey = imagenet_normalization(1)
    assert len(grey["mean"]) == 1 and grey["std"][0] == pytest.approx(0.226, abs=1e-3)


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("conv4", "weights exist for resnet18 (ImageNet) and timm:NAME models, not conv4"),
        ("resnet18", "--pretrained"),
    ],
)
def test_cli_refusals_are_one_line(tmp_path, model, expected):
    env = {**os.environ, "TORCH_HOME": str(tmp_path / "torch")}
    proc = subprocess.run(
        [SIAMNET, "train", "--model", model, "--pretrained", "--out", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        env=env,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("siamnet: error:") and expected in lines[0]
    assert not (tmp_path / "run").exists()


def test_the_imagenet_layout_takes_the_adapted_weights(tmp_path):
    from torchvision.models import resnet18

    torch.save(resnet18(weights=None).state_dict(), tmp_path / "w.pth")
    from siamnet.models.backbones import build_backbone

    net = build_backbone("resnet18-imagenet", 1, (28, 28))
    net.load_state_dict(load_resnet18_weights(tmp_path / "w.pth", 1))
    assert net(torch.rand(2, 1, 28, 28)).shape == (2, 512)
