"""Folders of photographs indexed at load and read per batch: the index (headers only), the
cache choice, views over files that read as the tensor operations would, and training that is
the same, weight for weight, whether the images are held in memory or decoded by loader
workers, resumed or not."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
from photo_folder import make_photo_folder

from siamnet.checkpoint import read_checkpoint_payload
from siamnet.data import cache as cache_module
from siamnet.data.class_augment import with_rotated_classes
from siamnet.data.image_index import ImageFiles, concat_images, read_header
from siamnet.data.sources.folder_source import load_folder
from siamnet.data.streaming import BatchDraws, batch_loader
from siamnet.errors import DataError
from siamnet.evaluate.data import merge_splits
from siamnet.evaluate.pixels import pixel_embeddings
from siamnet.images import read_image
from siamnet.models.embed import embed_images
from siamnet.models.siamese import ModelSpec, build_model
from siamnet.train import TrainConfig, fit
from siamnet.train.data import held_when_it_fits

from helpers import ENV, SIAMNET


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    return make_photo_folder(tmp_path_factory.mktemp("photos") / "photos")


def test_a_colour_folder_is_indexed_from_headers_and_reads_as_its_cache(photos):
    off = load_folder(photos, cache="off").train
    on = load_folder(photos, cache="on").train
    assert off.streamed and isinstance(off.images, ImageFiles) and not on.streamed
    # median shorter side of 20, 24, 24, 28, 30, 32 (each four times): 26
    assert off.channels == 3 and off.image_size == (26, 26) == on.image_size
    assert (
        off.notes
        == on.notes
        == (
            "image sizes: heights 20..40 (median 30), widths 24..36 (median 31), 6 distinct; "
            "modes: RGB 12, RGBA 6, L 6",
            "resized 24 of 24 images to 26x26 (the median shorter side; --image-size to choose; "
            "shorter side scaled, centre cropped)",
        )
    )
    assert torch.equal(off.images.decode(), on.images)
    assert torch.equal(off.images.decode(threads=0), on.images)
    first = sorted((photos / "class00").iterdir())[0]
    assert torch.equal(on.images[0], read_image(first, 3, (26, 26)))
    assert torch.equal(off.images[0], on.images[0]) and torch.equal(off.images[2:5], on.images[2:5])
    assert read_header(first).size == (24, 32) and read_header(first).mode == "RGB"


def test_views_over_files_read_as_the_tensor_operations(photos):
    off = load_folder(photos, cache="off", image_size=(16, 16)).train
    on = load_folder(photos, cache="on", image_size=(16, 16)).train
    index = torch.tensor([5, 0, 17, 5])
    assert torch.equal(off.images.take(index).decode(), on.images[index])
    assert torch.equal(off.subset(index).images.decode(), on.subset(index).images)
    picked = off.select_classes([3, 1])
    assert picked.streamed and torch.equal(picked.images.decode(), on.select_classes([3, 1]).images)
    turned = with_rotated_classes(off)
    assert turned.streamed and len(turned) == 4 * len(off)
    assert torch.equal(turned.images.decode(), with_rotated_classes(on).images[:])
    joined = concat_images([off.images.take(index), off.images.rotated(2)])
    expected = torch.cat([on.images[index], torch.rot90(on.images, 2, dims=(2, 3))])
    assert torch.equal(joined.decode(), expected)


def test_loader_workers_decode_the_rows_each_batch_names(photos):
    files = load_folder(photos, cache="off", image_size=(16, 16)).train.images
    cached = files.decode()
    draw = lambda g: {"index": torch.randint(0, len(files), (6,), generator=g)}  # noqa: E731
    draws = BatchDraws(draw, torch.Generator().manual_seed(3), steps=4)
    expected = [draw(g) for g in [torch.Generator().manual_seed(3)] for _ in range(4)]
    got = list(batch_loader(files, ["index"], draws, workers=2))
    assert len(got) == 4
    for (batch, rows, images), want in zip(got, expected, strict=True):
        assert torch.equal(batch["index"], want["index"])
        assert torch.equal(rows, torch.unique(want["index"]))
        assert torch.equal(images, cached[rows])


def test_cache_auto_holds_a_set_under_the_limit_and_streams_a_larger_one(photos, monkeypatch):
    assert not load_folder(photos).train.streamed  # a few KB: held
    monkeypatch.setattr(cache_module, "CACHE_LIMIT_GB", 1e-6)  # about 1 KB
    data = load_folder(photos).train
    assert data.streamed
    assert data.notes[-1].startswith("images read from disk per batch (0.00 GB decoded at 26x26")
    assert not load_folder(photos, cache="on").train.streamed
    monkeypatch.setattr(cache_module, "CACHE_LIMIT_GB", 20_000 / 2**30)  # 48 KB do not fit
    data = load_folder(photos).train
    few = data.subset(torch.arange(5))  # 10 KB do
    assert data.streamed and not held_when_it_fits(few, "auto").streamed
    assert torch.equal(held_when_it_fits(few, "auto").images, few.images.decode())
    assert held_when_it_fits(few, "off").streamed and held_when_it_fits(data, "auto").streamed
    with pytest.raises(Exception, match=r"--cache 'sometimes': expected one of auto, on, off"):
        load_folder(photos, cache="sometimes")


def test_a_damaged_image_body_is_named_when_it_is_read(tmp_path):
    root = make_photo_folder(tmp_path / "p", classes=2, per_class=2)
    jpeg = root / "class00" / "0.jpg"
    data = jpeg.read_bytes()
    jpeg.write_bytes(data[:-100])  # the header is whole, the pixels are not
    files = load_folder(root, cache="off").train.images  # indexing reads headers only
    with pytest.raises(DataError, match=r"class00/0\.jpg: not a readable image"):
        files.decode()


def _train(out: Path, data: Path, **kw) -> dict[str, torch.Tensor]:
    cfg = TrainConfig(
        data=str(data),
        model="conv4",
        loss="proto",
        ways=3,
        shots=1,
        queries=1,
        rotate_classes=True,
        epochs=2,
        steps_per_epoch=3,
        image_size=(16, 16),
        normalize="unit",
        val_pairs=40,
        val_episodes=10,
        out=str(out),
        quiet=True,
        device="cpu",
        **kw,
    )
    fit(cfg)
    return read_checkpoint_payload(out / "last.pt")["model"]


@pytest.mark.slow
def test_streamed_and_cached_training_give_the_same_weights(photos, tmp_path):
    cached = _train(tmp_path / "cached", photos, cache="on")
    streamed = _train(tmp_path / "streamed", photos, cache="off", loader_workers=2)
    in_process = _train(tmp_path / "in-process", photos, cache="off", loader_workers=0)
    for other in (streamed, in_process):
        assert cached.keys() == other.keys()
        assert all(torch.equal(cached[k], other[k]) for k in cached)


def _cli_train(out: Path, data: Path, *extra: str) -> subprocess.CompletedProcess:
    args = [
        "train", "--data", data, "--model", "conv4", "--loss", "contrastive",
        "--steps-per-epoch", "4", "--batch-size", "8", "--image-size", "16",
        "--schedule", "none", "--patience", "0", "--time-budget", "0",
        "--augment", "affine",
        "--cache", "off", "--loader-workers", "2", "--device", "cpu",
        "--out", out, "--quiet", "--json", *extra,
    ]  # fmt: skip
    return subprocess.run(
        [SIAMNET, *map(str, args)], capture_output=True, text=True, env=ENV, timeout=300
    )


@pytest.mark.slow
def test_worker_streamed_training_resumes_bit_exact(photos, tmp_path):
    full = _cli_train(tmp_path / "full", photos, "--epochs", "3")
    assert full.returncode == 0, full.stderr
    first = _cli_train(tmp_path / "part", photos, "--epochs", "1")
    assert first.returncode == 0, first.stderr
    resumed = subprocess.run(
        [
            SIAMNET,
            "train",
            "--resume",
            str(tmp_path / "part"),
            "--epochs",
            "3",
            "--quiet",
            "--json",
        ],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["epochs_run"] == 3
    a = read_checkpoint_payload(tmp_path / "full" / "last.pt")["model"]
    b = read_checkpoint_payload(tmp_path / "part" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_evaluation_merges_splits_on_disk_and_embeds_them_a_chunk_at_a_time(tmp_path):
    for split in ("train", "test"):
        make_photo_folder(tmp_path / "p" / split, classes=3, per_class=4, seed=len(split))
    off = load_folder(tmp_path / "p", cache="off", image_size=(16, 16))
    on = load_folder(tmp_path / "p", cache="on", image_size=(16, 16))
    merged = merge_splits(off, ["class02", "class00"])
    assert merged.streamed and len(merged) == 16
    assert torch.equal(merged.images.decode(), merge_splits(on, ["class02", "class00"]).images)
    torch.manual_seed(0)
    spec = ModelSpec(model="conv4", loss="contrastive", image_size=(16, 16), in_channels=3)
    model = build_model(spec).eval()
    streamed = embed_images(model, merged.images, batch_size=5)
    assert torch.equal(streamed, embed_images(model, merged.images.decode(), batch_size=5))
    assert torch.equal(pixel_embeddings(merged.images), merged.images.decode().flatten(1).float())
