"""timm backbones (``--model timm:NAME``): built without a classifier, weights from a local
file or cache that load and equal the file, never a download; the training model's fine-tuning
options (backbone learning-rate factor, frozen batch norm) and the photo rule."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from siamnet.data.labeled import LabeledImages
from siamnet.errors import ArgumentError
from siamnet.models import build_backbone
from siamnet.models.pretrained import (
    find_timm_weights,
    hf_hub_cache,
    load_timm_pretrained,
    timm_input_size,
    timm_normalization,
)
from siamnet.presets import (
    PHOTO_MIN_SIDE,
    PHOTO_MODEL,
    PHOTO_QUERIES,
    PHOTO_TEMPERATURE,
    PHOTO_WAYS,
    is_photo,
)
from siamnet.train import TrainConfig
from siamnet.train.data import TrainData
from siamnet.train.model import build_training_model, freeze_batch_norm, photo_episodes
from siamnet.train.optim import build_optimizer

from helpers import refused, siamnet

TINY = "timm:test_resnet"  # 0.4 M parameters, 96-d features


def timm_weights(path, name: str = "test_resnet", seed: int = 3) -> dict[str, torch.Tensor]:
    """A timm model's full state dict (classifier included), saved to `path`."""
    torch.manual_seed(seed)
    state = timm.create_model(name).state_dict()
    if str(path).endswith(".safetensors"):
        save_file(state, str(path))
    else:
        torch.save(state, path)
    return state


# --- building -----------------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 3])
def test_a_timm_model_is_built_without_its_classifier(channels):
    net = build_backbone(TINY, channels, (32, 32)).eval()
    assert net.out_dim == net.num_features == 96
    assert not any(isinstance(m, nn.Linear) for m in net.modules())  # no classifier
    with torch.no_grad():
        assert net(torch.rand(2, channels, 32, 32)).shape == (2, 96)


def test_a_vision_transformer_is_built_for_the_image_size():
    net = build_backbone("timm:test_vit", 3, (32, 48)).eval()
    with torch.no_grad():
        assert net(torch.rand(2, 3, 32, 48)).shape == (2, net.out_dim)


def test_an_unknown_timm_model_is_one_line():
    with pytest.raises(ArgumentError) as info:
        build_backbone("timm:no_such_net", 3, (32, 32))
    message = str(info.value)
    assert "timm has no model 'no_such_net'" in message and "list_models" in message
    assert "\n" not in message


def test_without_timm_the_message_names_the_vision_extra():
    script = (
        "import sys; sys.modules['timm'] = None\n"
        "from siamnet.models import build_backbone\n"
        "try:\n    build_backbone('timm:test_resnet', 3, (32, 32))\n"
        "except Exception as exc:\n    print(type(exc).__name__, exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == (
        "ArgumentError --model timm:test_resnet: timm models need timm: pip install "
        "'siamnet[vision]'"
    )


def test_normalisation_and_input_size_come_from_the_pretrained_configuration():
    assert timm_normalization("timm:resnet10t", 3) == {
        "scale": 255.0,
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
    }
    grey = timm_normalization("timm:resnet10t", 1)
    assert grey["mean"] == [pytest.approx(0.449)] and grey["std"] == [pytest.approx(0.226)]
    assert timm_normalization(TINY, 3)["mean"] == [0.5, 0.5, 0.5]
    assert timm_input_size("timm:resnet10t") == (176, 176)
    # the training size when --image-size is not given
    assert TrainConfig(model="timm:resnet10t").resolved().image_size == (176, 176)
    assert TrainConfig(model="timm:resnet10t", image_size=(40, 40)).resolved().image_size == (
        40,
        40,
    )


# --- weights ------------------------------------------------------------------------------------


def test_weights_from_a_safetensors_file_load_and_equal_the_file(tmp_path):
    path = tmp_path / "weights.safetensors"
    timm_weights(path)
    net = load_timm_pretrained(TINY, path, 3, (32, 32))
    in_file = load_file(str(path))
    mine = net.state_dict()
    assert set(in_file) - set(mine) == {"fc.weight", "fc.bias"}  # the classifier is dropped
    for key, value in mine.items():
        assert torch.equal(value, in_file[key]), key
    # grey images: the first layer's filters summed over RGB (the response to R = G = B)
    grey = load_timm_pretrained(TINY, path, 1, (32, 32))
    first = in_file["conv1.0.weight"]
    torch.testing.assert_close(grey.conv1[0].weight, first.sum(dim=1, keepdim=True))


def test_a_torch_state_dict_loads_too(tmp_path):
    path = tmp_path / "weights.pth"
    state = timm_weights(path, seed=4)
    net = load_timm_pretrained(TINY, path, 3, (32, 32))
    assert torch.equal(net.layer4[0].conv1.weight, state["layer4.0.conv1.weight"])


def test_files_that_do_not_fit_are_one_line(tmp_path):
    other = tmp_path / "other.safetensors"
    timm_weights(other, name="resnet10t")
    with pytest.raises(ArgumentError, match=r"not weights for timm:test_resnet \(") as info:
        load_timm_pretrained(TINY, other, 3, (32, 32))
    assert "\n" not in str(info.value)
    partial = tmp_path / "partial.safetensors"
    state = timm_weights(tmp_path / "full.pth")
    save_file({k: v for k, v in state.items() if not k.startswith("layer4.")}, str(partial))
    with pytest.raises(ArgumentError, match=r"missing key\(s\), e\.g\. layer4\.0\.conv1\.weight"):
        load_timm_pretrained(TINY, partial, 3, (32, 32))
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a weight file")
    with pytest.raises(ArgumentError, match="not weights for timm:test_resnet"):
        load_timm_pretrained(TINY, junk, 3, (32, 32))
    # a pickled object is never unpickled (weights_only)
    torch.save({"model": nn.Linear(2, 2)}, tmp_path / "pickled.pth")
    with pytest.raises(ArgumentError, match="not weights for timm:test_resnet"):
        load_timm_pretrained(TINY, tmp_path / "pickled.pth", 3, (32, 32))


def test_a_missing_weight_file_is_one_line(tmp_path):
    with pytest.raises(ArgumentError) as info:
        find_timm_weights(TINY, tmp_path / "nothing.safetensors")
    message = str(info.value)
    assert message.startswith(f"--pretrained {tmp_path / 'nothing.safetensors'}: no such weight")
    assert "\n" not in message


def test_weights_are_found_in_the_hub_cache_and_never_downloaded(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch"))
    with pytest.raises(ArgumentError) as info:
        find_timm_weights("timm:resnet10t")
    message = str(info.value)
    assert str(tmp_path / "hub" / "models--timm--resnet10t.c3_in1k") in message
    assert str(tmp_path / "torch" / "checkpoints" / "resnet10t_176_c3-f3215ab1.pth") in message
    assert "--pretrained PATH" in message and "\n" not in message
    # where timm.create_model(..., pretrained=True) would have left the file
    repo = hf_hub_cache() / "models--timm--test_resnet.r160_in1k"
    snapshot = repo / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    state = timm_weights(snapshot / "model.safetensors", seed=5)
    found = find_timm_weights(TINY)
    assert found == snapshot / "model.safetensors"
    net = load_timm_pretrained(TINY, found, 3, (32, 32))
    assert torch.equal(net.conv1[0].weight, state["conv1.0.weight"])


# --- the training model -------------------------------------------------------------------------


def colour_data(size: int = 40, channels: int = 3, classes: int = 6) -> TrainData:
    generator = torch.Generator().manual_seed(0)
    n = classes * 4
    images = torch.randint(
        0, 256, (n, channels, size, size), dtype=torch.uint8, generator=generator
    )
    train = LabeledImages(images, torch.arange(n) % classes, [f"c{i}" for i in range(classes)])
    return TrainData(train, train, "held-out examples of training classes", None, None, [])


def test_a_pretrained_timm_model_trains_from_the_file(tmp_path):
    path = tmp_path / "w.safetensors"
    state = timm_weights(path)
    cfg = TrainConfig(model=TINY, pretrained=str(path), image_size=(40, 40)).resolved()
    assert cfg.backbone_lr_factor == 0.1  # fine-tuning: the backbone learns at a tenth
    model = build_training_model(cfg, colour_data(), torch.Generator().manual_seed(0))
    assert model.spec.model == TINY and model.spec.normalization["mean"] == [0.5, 0.5, 0.5]
    assert torch.equal(model.backbone.conv1[0].weight, state["conv1.0.weight"])
    groups = build_optimizer(cfg, model).param_groups
    backbone = {id(p) for p in model.backbone.parameters()}
    assert [(g["lr"], {id(p) for p in g["params"]}) for g in groups] == [
        (pytest.approx(cfg.lr * 0.1), backbone),
        (cfg.lr, {id(p) for p in model.parameters()} - backbone),
    ]


def test_one_group_when_the_backbone_learns_at_the_full_rate():
    cfg = TrainConfig(model="conv4").resolved()
    assert cfg.backbone_lr_factor == 1.0
    model = build_training_model(cfg, colour_data(channels=1), torch.Generator())
    assert len(build_optimizer(cfg, model).param_groups) == 1  # as saved by earlier runs


def test_frozen_batch_norm_keeps_its_statistics_and_learns_its_scale():
    cfg = TrainConfig(model=TINY, freeze_bn=True, image_size=(32, 32)).resolved()
    model = build_training_model(cfg, colour_data(32), torch.Generator())
    bn = [m for m in model.backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    before = [(m.running_mean.clone(), m.weight.detach().clone()) for m in bn]
    model.train()
    assert not any(m.training for m in bn) and model.backbone.training
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model.embed(torch.rand(8, 3, 32, 32) * 255).pow(2).sum().backward()
    optimizer.step()
    assert all(torch.equal(m.running_mean, mean) for m, (mean, _) in zip(bn, before, strict=True))
    assert any(not torch.equal(m.weight, weight) for m, (_, weight) in zip(bn, before, strict=True))
    assert freeze_batch_norm(nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))) == 1


# --- the default recipe on photographs ----------------------------------------------------------


def test_the_photo_rule():
    assert not is_photo(1, (28, 28)) and not is_photo(1, (PHOTO_MIN_SIDE, 64))
    assert is_photo(3, (28, 28)) and is_photo(1, (PHOTO_MIN_SIDE + 1, PHOTO_MIN_SIDE + 1))


def test_the_default_recipe_trains_photos_on_unit_length_pooled_embeddings():
    cfg = TrainConfig().resolved()
    assert cfg.photo == "auto" and cfg.model == "conv4-map"
    photo = build_training_model(cfg, colour_data(64), torch.Generator())
    assert photo.spec.model == PHOTO_MODEL and photo.spec.embedding_norm
    assert photo.backbone.out_dim == 576
    assert photo.log_temperature.item() == pytest.approx(math.log(PHOTO_TEMPERATURE))
    emb = photo.eval().embed(torch.randint(0, 256, (3, 3, 64, 64), dtype=torch.uint8))
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(3))
    # 28-px grey images: the recipe as it was measured
    grey = build_training_model(cfg, colour_data(28, channels=1), torch.Generator())
    assert grey.spec.model == "conv4-map" and not grey.spec.embedding_norm
    assert grey.log_temperature.item() == 0.0
    # a model given by hand is kept; --photo asks for the embedding with it
    given = TrainConfig(model="conv4-map").resolved()
    assert given.photo is False
    assert build_training_model(given, colour_data(64), torch.Generator()).spec.model == (
        "conv4-map"
    )
    asked = TrainConfig(model="conv4", photo=True).resolved()
    net = build_training_model(asked, colour_data(28, channels=1), torch.Generator())
    assert net.spec.model == "conv4" and net.spec.embedding_norm
    # a network made for photographs, given by hand, keeps its backbone and takes the recipe
    timm_cfg = TrainConfig(model=TINY).resolved()
    assert timm_cfg.photo == "auto"
    tiny = build_training_model(timm_cfg, colour_data(64), torch.Generator())
    assert tiny.spec.model == TINY and tiny.spec.embedding_norm
    assert tiny.log_temperature.item() == pytest.approx(math.log(PHOTO_TEMPERATURE))
    episodes = photo_episodes(timm_cfg, colour_data(64), episodes_given=False)
    assert (episodes.ways, episodes.queries) == (PHOTO_WAYS, PHOTO_QUERIES)
    assert TrainConfig(model=TINY, preset="koch").resolved().photo is False


def test_conv4_pool_is_conv4_map_at_28_pixels():
    torch.manual_seed(0)
    pooled = build_backbone("conv4-pool", 1, (28, 28)).eval()
    flat = build_backbone("conv4-map", 1, (28, 28)).eval()
    flat.load_state_dict(pooled.state_dict())
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(pooled(x), flat(x))
        for size in (64, 97):
            net = build_backbone("conv4-pool", 3, (size, size)).eval()
            assert net(torch.rand(1, 3, size, size)).shape == (1, 576)


# --- the command line ---------------------------------------------------------------------------


def test_train_refuses_in_one_line_before_writing(tmp_path):
    env = {"HF_HUB_CACHE": str(tmp_path / "hub"), "TORCH_HOME": str(tmp_path / "torch")}
    out = tmp_path / "run"
    refused(
        siamnet("train", "--model", TINY, "--pretrained", "--out", out, env=env),
        f"--pretrained: no weights for {TINY} on this machine",
        str(tmp_path / "hub" / "models--timm--test_resnet.r160_in1k"),
        "--pretrained PATH",
    )
    refused(
        siamnet("train", "--model", TINY, "--pretrained", tmp_path / "none.pt", "--out", out),
        f"--pretrained {tmp_path / 'none.pt'}: no such weight file",
    )
    refused(siamnet("train", "--model", "timm:no_such_net", "--out", out), "timm has no model")
    refused(
        siamnet("train", "--model", TINY, "--backbone-lr-factor", "-1", "--out", out),
        "--backbone-lr-factor -1.0",
    )
    assert not out.exists()


def test_a_run_records_the_cached_weight_file_it_started_from(tmp_path, monkeypatch):
    from siamnet.checkpoint import load_checkpoint
    from siamnet.train import fit

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    repo = hf_hub_cache() / "models--timm--test_resnet.r160_in1k"
    snapshot = repo / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    timm_weights(snapshot / "model.safetensors", seed=5)
    images = torch.randint(0, 256, (24, 3, 32, 32), dtype=torch.uint8)
    data = LabeledImages(images, torch.arange(24) % 6, [f"c{i}" for i in range(6)])
    cfg = TrainConfig(
        data=data, model=TINY, pretrained="imagenet", epochs=1, steps_per_epoch=1,
        device="cpu", out=str(tmp_path / "run"), quiet=True,
    )  # fmt: skip
    fit(cfg)
    args = load_checkpoint(tmp_path / "run" / "best.pt").metadata["training_args"]
    assert args["pretrained"] == str(snapshot / "model.safetensors")
