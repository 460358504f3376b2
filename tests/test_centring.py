"""Test-time centring (SimpleShot's CL2N): the mean training embedding is computed once when
training ends, stored in the checkpoint, and applied by every verb and export alike."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

import siamnet
from siamnet.checkpoint import load_checkpoint
from siamnet.errors import ArgumentError
from siamnet.export import export_model
from siamnet.images import read_image
from siamnet.infer import SupportSet, classify, compare
from siamnet.models.embed import embed_images
from siamnet.models.siamese import build_model, centring_as, centring_state
from siamnet.train.config import TrainConfig
from siamnet.train.data import prepare_data
from siamnet.train.validation import mean_embedding

from helpers import refused
from helpers import siamnet as run_siamnet
from shapes_model import SHAPES, draw_shapes, shapes_spec, write_png, write_shape_folder

TINY = ["--data", "digits", "--model", "seed-cnn", "--loss", "contrastive", "--epochs", "1"]
TINY += ["--steps-per-epoch", "3", "--device", "cpu"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run trained through the command with ``--centring on``, and its printed summary."""
    out = tmp_path_factory.mktemp("centred") / "run"
    done = run_siamnet("train", *TINY, "--centring", "on", "--out", out)
    assert done.returncode == 0, done.stderr
    return out, done.stdout


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("centring-images")
    images = draw_shapes(torch.arange(8) % len(SHAPES), seed=31)
    queries = root / "queries"
    queries.mkdir()
    for i, image in enumerate(images):
        write_png(queries / f"{i}-{SHAPES[i % len(SHAPES)]}.png", image)
    write_shape_folder(root / "support", per_class=2, seed=41)
    return root


def raw_embeddings(model, images):
    with centring_as(model, "off"):
        return embed_images(model, images)


def test_the_mean_of_the_training_images_is_stored_and_applied(run):
    ckpt = load_checkpoint(run[0])
    model = ckpt.model
    assert ckpt.spec.centring == "on" and centring_state(model) == "on"
    stored = ckpt.metadata["training_args"]
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    cfg = TrainConfig(**{k: v for k, v in stored.items() if k in known and k != "image_size"})
    train = prepare_data(cfg.resolved()).train
    expected = raw_embeddings(model, train.images).double().mean(0).float()
    assert torch.allclose(model.embedding_mean, expected, atol=1e-5)
    images = draw_shapes(torch.arange(6) % len(SHAPES), seed=3)
    centred = embed_images(model, images)
    assert torch.allclose(centred, F.normalize(raw_embeddings(model, images) - expected), atol=1e-5)
    assert torch.allclose(centred.norm(dim=1), torch.ones(6), atol=1e-5)
    assert ckpt.metadata["threshold_source"].endswith("centred embeddings")


def test_the_summary_says_centring_is_on(run):
    assert "centring: on (embeddings minus the mean training embedding" in run[1]
    summary = json.loads((run[0] / "summary.json").read_text())
    assert summary["centring"] == "on"


def test_mean_embedding_in_chunks_equals_the_mean_of_all(run):
    model = load_checkpoint(run[0]).model
    images = draw_shapes(torch.arange(2100) % len(SHAPES), seed=5)  # two chunks at 28x28
    expected = raw_embeddings(model, images).double().mean(0).float()
    with centring_as(model, "off"):
        assert torch.allclose(
            mean_embedding(model, images, torch.device("cpu")), expected, atol=1e-6
        )


def test_compare_and_classify_give_the_same_scores_through_the_api_and_the_command(run, files):
    ckpt = load_checkpoint(run[0])
    spec = ckpt.spec
    a, b = files / "queries" / "0-bar.png", files / "queries" / "2-ring.png"
    done = run_siamnet("compare", run[0], a, b, "--json")
    assert done.returncode == 0, done.stderr
    by_command = json.loads(done.stdout)
    pixels = [read_image(p, spec.in_channels, spec.image_size) for p in (a, b)]
    by_api = compare(ckpt, *pixels)
    assert by_command["score"] == pytest.approx(by_api.score, abs=1e-5)
    e = F.normalize(raw_embeddings(ckpt.model, torch.stack(pixels)) - ckpt.model.embedding_mean)
    assert by_api.score == pytest.approx(-float((e[0] - e[1]).norm()), abs=1e-5)

    done = run_siamnet(
        "classify", run[0], "--support", files / "support", "--query", files / "queries", "--json"
    )
    assert done.returncode == 0, done.stderr
    predictions = json.loads(done.stdout)["predictions"]
    paths = sorted((files / "support").rglob("*.png"))
    classes = sorted(SHAPES)
    labels = torch.tensor([classes.index(p.parent.name) for p in paths])
    support = SupportSet(siamnet.embed(ckpt, paths), labels, classes)
    queries = siamnet.embed(ckpt, [files / "queries" / Path(p["file"]).name for p in predictions])
    for by_cli, by_py in zip(predictions, classify(ckpt, support, queries), strict=True):
        assert by_cli["label"] == by_py.label
        assert by_cli["score"] == pytest.approx(by_py.score, abs=1e-5)


def test_evaluate_measures_with_and_without_centring_from_one_checkpoint(run):
    args = ["--ways", "5", "--shots", "1", "--episodes", "100", "--pairs", "400", "--json", "-"]
    reports = {}
    for centring in ("on", "off"):
        done = run_siamnet("evaluate", run[0], "--centring", centring, *args)
        assert done.returncode == 0, done.stderr
        reports[centring] = json.loads(done.stdout)
    assert reports["on"]["model"]["centring"] == "on"
    assert reports["off"]["model"]["centring"] == "off"
    names = {c: [t["name"] for t in r["verification"]["thresholds"]] for c, r in reports.items()}
    assert "calibrated" in names["on"] and "calibrated" not in names["off"]
    assert any(
        "tuned on the other embeddings" in n for n in reports["off"]["evaluation_data"]["notes"]
    )
    ckpt = load_checkpoint(run[0])
    api = siamnet.evaluate_checkpoint(ckpt, "digits", ways=[5], shots=[1], episodes=100, pairs=400)
    assert api.report["one_shot"] == reports["on"]["one_shot"]
    assert api.report["verification"]["roc_auc"] == reports["on"]["verification"]["roc_auc"]
    off = siamnet.evaluate_checkpoint(
        ckpt, "digits", ways=[5], shots=[1], episodes=100, pairs=400, centring="off"
    )
    assert off.report["one_shot"] == reports["off"]["one_shot"]
    assert centring_state(ckpt.model) == "on"  # the override lasted only for the measurement


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_export_parity_includes_centring(run, tmp_path, fmt):
    ckpt = load_checkpoint(run[0])
    result = export_model(ckpt, fmt, tmp_path / f"m.{'pt' if fmt == 'torchscript' else 'onnx'}")
    assert result.embedding_max_abs_diff <= 1e-4
    info = json.loads((tmp_path / "m.json").read_text())
    assert info["centring"] == "on" and info["input"]["resize"] == "crop"
    images = draw_shapes(torch.arange(4) % len(SHAPES), seed=9)
    if fmt == "torchscript":
        module = torch.jit.load(str(tmp_path / "m.pt"))
        exported = module(images.float())
    else:
        import onnxruntime

        session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"))
        exported = torch.from_numpy(session.run(None, {"images": images.float().numpy()})[0])
    assert torch.allclose(exported, siamnet.embed(ckpt, images), atol=1e-5)
    assert torch.allclose(exported.norm(dim=1), torch.ones(4), atol=1e-5)


def test_a_shared_model_keeps_the_mean_and_gives_the_same_scores(run, files, tmp_path):
    ckpt = load_checkpoint(run[0])
    folder = tmp_path / "shared"
    siamnet.save_pretrained(ckpt, folder)
    shared = load_checkpoint(folder)
    assert shared.spec.centring == "on" and torch.equal(
        shared.model.embedding_mean, ckpt.model.embedding_mean
    )
    queries = sorted((files / "queries").glob("*.png"))
    assert torch.allclose(siamnet.embed(shared, queries), siamnet.embed(ckpt, queries), atol=1e-6)


def test_centring_off_stores_the_mean_without_applying_it(tmp_path):
    out = tmp_path / "run"
    done = run_siamnet("train", *TINY, "--centring", "off", "--quiet", "--out", out)
    assert done.returncode == 0, done.stderr
    ckpt = load_checkpoint(out)
    assert ckpt.spec.centring == "off" and centring_state(ckpt.model) == "off"
    assert ckpt.model.embedding_mean is not None
    images = draw_shapes(torch.arange(4) % len(SHAPES), seed=2)
    assert torch.equal(embed_images(ckpt.model, images), raw_embeddings(ckpt.model, images))
    assert json.loads((out / "summary.json").read_text())["centring"] == "off"


def test_centring_with_a_learned_weight_head_is_refused_in_one_line(tmp_path):
    args = [*TINY, "--loss", "bce", "--centring", "on", "--out", tmp_path / "r"]
    refused(run_siamnet("train", *args), "--centring on", "l1 head", "--loss bce")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(("loss", "why"), [("bce", "l1 head learned"), ("contrastive", "before")])
def test_a_model_without_a_mean_cannot_be_centred(loss, why):
    model = build_model(shapes_spec(loss))
    assert centring_state(model) == "none"
    with pytest.raises(ArgumentError, match=rf"--centring on: .*no mean training embedding.*{why}"):
        with centring_as(model, "on"):
            pass
    with centring_as(model, "off") as state:
        assert state == "none"
