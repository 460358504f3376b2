"""Backbones layer by layer: seed-cnn, koch, conv4, resnet18."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import torch
from torch import nn

from siamnet.errors import ArgumentError
from siamnet.models import build_backbone
from siamnet.models.backbones import Conv4, KochNet, SeedCNN


def layers(module: nn.Module, kind: type[nn.Module]) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, kind)]


def convs(module: nn.Module) -> list[tuple[int, int, tuple[int, int]]]:
    """``(in, out, kernel)`` of every convolution, in order."""
    found = layers(module, nn.Conv2d)
    return [(c.in_channels, c.out_channels, tuple(c.kernel_size)) for c in found]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# --- seed-cnn ----------------------------------------------------------------------------------


def test_seed_cnn_has_the_blog_posts_layers_on_28x28():
    net = SeedCNN()
    assert convs(net) == [(1, 32, (3, 3)), (32, 64, (3, 3))]
    pools = layers(net, nn.MaxPool2d)
    assert [p.kernel_size for p in pools] == [2, 2]
    # conv, pool, relu, conv, pool, relu (the post's relu-then-pool, reordered: same values)
    assert [type(m) for m in net.features] == [
        nn.Conv2d, nn.MaxPool2d, nn.ReLU, nn.Conv2d, nn.MaxPool2d, nn.ReLU,
    ]  # fmt: skip
    fcs = [(fc.in_features, fc.out_features) for fc in layers(net, nn.Linear)]
    assert fcs == [(64 * 5 * 5, 120), (120, 84)]  # 28 -conv-> 26 -pool-> 13 -conv-> 11 -pool-> 5
    assert net.out_dim == 84
    out = net(torch.rand(3, 1, 28, 28) * 255)
    assert out.shape == (3, 84) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["seed-cnn", "conv4", "conv4-map", "koch"])
def test_pooling_before_relu_gives_the_values_and_gradients_of_relu_before_pooling(name):
    torch.manual_seed(0)
    net = build_backbone(name, 1, (28, 28))
    modules = list(net.features)
    swapped = []  # back to the papers' order: every MaxPool2d, ReLU pair becomes ReLU, MaxPool2d
    for m in modules:
        if isinstance(m, nn.ReLU) and swapped and isinstance(swapped[-1], nn.MaxPool2d):
            swapped.insert(len(swapped) - 1, m)
        else:
            swapped.append(m)
    assert swapped != modules and sum(isinstance(m, nn.MaxPool2d) for m in modules) >= 2
    x = torch.rand(4, 1, 28, 28) * 255
    ours = net.features(x)
    ours.square().sum().backward()
    grads = [p.grad.clone() for p in net.parameters() if p.grad is not None]
    net.zero_grad()
    theirs = nn.Sequential(*swapped)(x)
    theirs.square().sum().backward()
    assert torch.equal(ours, theirs)
    for mine, paper in zip(
        grads, [p.grad for p in net.parameters() if p.grad is not None], strict=True
    ):
        torch.testing.assert_close(mine, paper)


def test_seed_cnn_computes_its_flatten_size_for_other_inputs_and_channels():
    # 40 -> 38 -> 19 -> 17 -> 8 rows, 32 -> 30 -> 15 -> 13 -> 6 columns
    net = SeedCNN(in_channels=3, image_size=(40, 32))
    assert convs(net)[0] == (3, 32, (3, 3))
    assert net.fc1.in_features == 64 * 8 * 6
    assert net(torch.rand(2, 3, 40, 32)).shape == (2, 84)
    assert build_backbone("seed-cnn", 3, (28, 28))(torch.rand(2, 3, 28, 28)).shape == (2, 84)
    with pytest.raises(RuntimeError):  # built for 3 channels: one channel does not fit
        net(torch.rand(2, 1, 40, 32))


def test_seed_cnn_refuses_inputs_smaller_than_10():
    assert SeedCNN(image_size=(10, 10))(torch.rand(1, 1, 10, 10)).shape == (1, 84)
    with pytest.raises(ArgumentError, match="seed-cnn.*10×10"):
        SeedCNN(image_size=(9, 28))


# --- koch ----------------------------------------------------------------------------------------


def test_koch_on_105x105_is_the_papers_network():
    net = KochNet(1, (105, 105))
    assert convs(net) == [
        (1, 64, (10, 10)), (64, 128, (7, 7)), (128, 128, (4, 4)), (128, 256, (4, 4)),
    ]  # fmt: skip
    assert len(layers(net, nn.MaxPool2d)) == 3  # after each of the first three convolutions
    assert len(layers(net, nn.ReLU)) == 4
    # 105 -> 96 -> 48 -> 42 -> 21 -> 18 -> 9 -> 6: 256·6·6 = 9216 features
    assert (net.fc.in_features, net.fc.out_features) == (9216, 4096)
    assert net.out_dim == 4096
    with torch.no_grad():
        out = net(torch.rand(2, 1, 105, 105))
    assert out.shape == (2, 4096)
    assert ((out > 0) & (out < 1)).all()  # the sigmoid of the paper's last layer


def test_koch_paper_initialisation():
    net = KochNet(1, (28, 28))
    net.reset_parameters_as_paper(torch.Generator().manual_seed(0))
    conv = layers(net, nn.Conv2d)[1]
    assert conv.weight.mean().item() == pytest.approx(0.0, abs=1e-3)
    assert conv.weight.std().item() == pytest.approx(1e-2, rel=0.05)
    assert conv.bias.mean().item() == pytest.approx(0.5, abs=5e-3)
    assert net.fc.weight.std().item() == pytest.approx(0.2, rel=0.05)


def test_koch_runs_on_28x28_by_clipping_kernels_and_skipping_pools():
    net = KochNet(1, (28, 28))
    # 28 -conv10-> 19 -pool-> 9 -conv7-> 3 -pool-> 1; the 4×4 kernels are clipped to the 1×1 map
    assert convs(net) == [
        (1, 64, (10, 10)), (64, 128, (7, 7)), (128, 128, (1, 1)), (128, 256, (1, 1)),
    ]  # fmt: skip
    assert len(layers(net, nn.MaxPool2d)) == 2  # the third pool, of a 1×1 map, is skipped
    assert net.fc.in_features == 256
    out = net(torch.rand(2, 1, 28, 28) * 255)
    assert out.shape == (2, 4096) and ((out >= 0) & (out <= 1)).all()
    assert build_backbone("koch", 3, (36, 48))(torch.rand(1, 3, 36, 48)).shape == (1, 4096)
    with pytest.raises(ArgumentError, match="koch.*10×10"):
        KochNet(1, (8, 8))


# --- conv4 ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size, flat",
    [((28, 28), 64), ((84, 84), 64 * 5 * 5), ((28, 56), 64 * 1 * 3), ((40, 32), 64 * 2 * 2)],
)
def test_conv4_gives_batch_by_dim_embeddings(size, flat):
    net = Conv4(1, size)
    assert net.out_dim == flat
    assert convs(net) == [(1, 64, (3, 3))] + [(64, 64, (3, 3))] * 3
    assert len(layers(net, nn.BatchNorm2d)) == 4 and len(layers(net, nn.MaxPool2d)) == 4
    out = net(torch.rand(3, 1, *size))
    assert out.shape == (3, flat)


@pytest.mark.parametrize("size, flat", [((28, 28), 64 * 3 * 3), ((84, 84), 64 * 10 * 10)])
def test_conv4_map_keeps_the_map_of_its_last_block(size, flat):
    net = build_backbone("conv4-map", 1, size)
    assert net.out_dim == flat
    assert convs(net) == [(1, 64, (3, 3))] + [(64, 64, (3, 3))] * 3
    assert len(layers(net, nn.MaxPool2d)) == 3
    assert type(net.features[-1]) is nn.ReLU and type(net.features[-2]) is nn.BatchNorm2d
    assert net(torch.rand(2, 1, *size)).shape == (2, flat)


def test_conv4_with_fewer_pools_takes_smaller_inputs_and_refuses_a_bad_count():
    assert Conv4(1, (16, 16), pools=3)(torch.rand(2, 1, 16, 16)).shape == (2, 64 * 2 * 2)
    with pytest.raises(ArgumentError, match=r"conv4 needs inputs of at least 8×8 with 3"):
        Conv4(1, (7, 7), pools=3)
    with pytest.raises(ArgumentError, match=r"pools must be 0..4, got 5"):
        Conv4(1, (28, 28), pools=5)


def test_conv4_with_three_channels_and_its_smallest_input():
    net = build_backbone("conv4", 3, (28, 28))
    assert convs(net)[0] == (3, 64, (3, 3))
    assert net(torch.rand(2, 3, 28, 28)).shape == (2, 64)
    assert Conv4(1, (16, 16))(torch.rand(2, 1, 16, 16)).shape == (2, 64)  # as documented


@pytest.mark.parametrize("size", [(15, 15), (28, 12), (8, 8)])
def test_conv4_refuses_inputs_below_16_with_a_clear_error(size):
    with pytest.raises(ArgumentError, match=r"conv4 needs inputs of at least 16×16") as info:
        build_backbone("conv4", 1, size)
    assert str(size) in str(info.value)


def test_build_backbone_names_the_choices_for_an_unknown_model():
    with pytest.raises(
        ArgumentError,
        match="'vgg'.*seed-cnn, koch, conv4, conv4-map, conv4-pool, resnet18.*timm:NAME",
    ):
        build_backbone("vgg", 1, (28, 28))


# --- resnet18 ------------------------------------------------------------------------------------


HIDE_TORCHVISION = """
import sys
sys.modules["torchvision"] = None  # as if it were not installed: importing it fails
from siamnet.errors import ArgumentError
from siamnet.models import build_backbone
from siamnet.models.backbones import resnet18
for make in (lambda: resnet18(1, (28, 28)), lambda: build_backbone("resnet18", 1, (28, 28))):
    try:
        make()
    except ArgumentError as exc:
        print(exc)
"""


def test_resnet18_without_torchvision_names_the_vision_extra():
    out = subprocess.run(
        [sys.executable, "-c", HIDE_TORCHVISION], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert len(out) == 2
    assert all(re.search(r"torchvision.*siamnet\[vision\]", line) for line in out), out


@pytest.mark.parametrize("channels, size", [(1, (28, 28)), (3, (64, 64))])
def test_resnet18_gives_512_d_embeddings(channels, size):
    net = build_backbone("resnet18", channels, size)
    assert net.out_dim == 512
    net.eval()
    with torch.no_grad():
        assert net(torch.rand(2, channels, *size)).shape == (2, 512)
