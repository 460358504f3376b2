"""The geometry a checkpoint records (`ModelSpec.resize`) is the one every verb reads files
with: a wide image is cropped to its centre, not squeezed; a checkpoint written before the
field existed keeps stretching."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import siamnet
from siamnet.checkpoint import load_checkpoint, read_checkpoint_payload, save_checkpoint
from siamnet.export import export_model

from helpers import siamnet as run_siamnet
from shapes_model import SHAPES, draw_shapes, write_checkpoint


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A checkpoint of today, one of before ``resize`` was recorded, a 28x28 shape and the
    same shape in the middle of a 28x84 image whose sides hold other shapes."""
    root = tmp_path_factory.mktemp("geometry")
    new = write_checkpoint(root / "new.pt")
    payload = read_checkpoint_payload(new)
    meta = payload["metadata"]
    del meta["model_spec"]["resize"], meta["model_spec"]["centring"]
    old = root / "old.pt"
    save_checkpoint(old, load_checkpoint(new).model, meta)
    shapes = draw_shapes(torch.arange(3) % len(SHAPES), seed=7)[:, 0].numpy()  # bar, cross, ring
    Image.fromarray(shapes[1]).save(root / "centre.png")
    Image.fromarray(np.concatenate([shapes[0], shapes[1], shapes[2]], axis=1)).save(
        root / "wide.png"
    )
    return root


def test_a_checkpoint_records_crop_and_an_old_one_stretches(files):
    assert load_checkpoint(files / "new.pt").spec.resize == "crop"
    assert load_checkpoint(files / "old.pt").spec.resize == "stretch"


def test_compare_crops_a_wide_image_to_its_centre(files):
    done = run_siamnet(
        "compare", files / "new.pt", files / "wide.png", files / "centre.png", "--json"
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["distance"] == pytest.approx(0.0, abs=1e-5)
    done = run_siamnet(
        "compare", files / "old.pt", files / "wide.png", files / "centre.png", "--json"
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["distance"] > 0.05  # squeezed: three shapes in one square


def test_the_api_reads_files_with_the_checkpoint_geometry(files):
    for name, same in (("new.pt", True), ("old.pt", False)):
        vectors = siamnet.embed(files / name, [files / "wide.png", files / "centre.png"])
        assert torch.allclose(vectors[0], vectors[1], atol=1e-6) is same


def test_export_describes_the_geometry(files, tmp_path):
    ckpt = load_checkpoint(files / "old.pt")
    export_model(ckpt, "torchscript", tmp_path / "m.pt")
    info = json.loads((tmp_path / "m.json").read_text())
    assert info["input"]["resize"] == "stretch" and info["centring"] == "none"


@pytest.mark.parametrize(("name", "cropped"), [("new.pt", True), ("old.pt", False)])
def test_index_and_the_service_read_files_with_the_checkpoint_geometry(
    files, tmp_path, name, cropped
):
    from siamnet.serve.service import load_support

    data = tmp_path / "data" / "cross"
    data.mkdir(parents=True)
    (data / "wide.png").write_bytes((files / "wide.png").read_bytes())
    gallery = tmp_path / "gallery"
    built = run_siamnet(
        "index", "build", files / name, "--data", tmp_path / "data", "--out", gallery
    )
    assert built.returncode == 0, built.stderr
    done = run_siamnet("index", "search", gallery, files / "centre.png", "--top-k", "1", "--json")
    assert done.returncode == 0, done.stderr
    match = json.loads(done.stdout)["results"][0]["matches"][0]
    # the same image: distance 0 up to the search's rounding (it expands |a - b|²)
    assert (match["score"] > -0.01) is cropped and (match["score"] < -0.05) is not cropped
    ckpt = load_checkpoint(files / name)
    support = load_support(ckpt, tmp_path / "data").support
    centre = siamnet.embed(ckpt, [files / "centre.png"])
    assert torch.allclose(support.embeddings.cpu(), centre, atol=1e-6) is cropped
