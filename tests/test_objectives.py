"""Objectives: each one's batches, loss and batch accuracy on a small model; the loop knows no
loss names; a user's own objective trains through `fit` and its checkpoint loads."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import siamnet.train
from siamnet.checkpoint import load_checkpoint
from siamnet.data.labeled import LabeledImages
from siamnet.models.siamese import ModelSpec, build_model
from siamnet.objectives import (
    OBJECTIVES,
    ContrastiveObjective,
    Objective,
    get_objective,
)
from siamnet.train import BatchMaker, TrainConfig, compute_loss, fit

from helpers import ENV


def tiny_data(classes: int = 6, per_class: int = 8) -> LabeledImages:
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(classes).repeat_interleave(per_class)
    images = torch.randint(0, 256, (len(labels), 1, 28, 28), generator=g, dtype=torch.uint8)
    return LabeledImages(images=images, labels=labels, classes=[str(c) for c in range(classes)])


@pytest.mark.parametrize(
    "name, pairs",
    [
        ("bce", None),
        ("contrastive", None),
        ("bce", "batch"),
        ("contrastive", "batch"),
        ("triplet", None),
        ("proto", None),
    ],
)
def test_each_objective_draws_its_batch_and_gives_a_finite_loss_and_an_accuracy(name, pairs):
    objective = get_objective(name)
    cfg = TrainConfig(loss=name, batch_size=16, ways=4, shots=1, queries=2, pairs=pairs).resolved()
    data = tiny_data()
    spec = ModelSpec(
        model="seed-cnn",
        loss=name,
        head=objective.head,
        embedding_norm=objective.embedding_norm,
        learned_temperature=objective.learned_temperature(cfg),
    )
    model = build_model(spec)
    batch = BatchMaker(cfg, data)(torch.Generator().manual_seed(1))
    present = [k for k in objective.image_keys if k in batch]
    assert present
    assert objective.images_in(batch) == sum(len(batch[k]) for k in present)
    if pairs == "batch":  # 4 classes × 4 examples, embedded once, every pair of them scored
        assert present == ["index"] and len(batch["index"]) == 16
        assert len(batch["target"]) == 16 * 15 // 2 and int(batch["target"].sum()) == 4 * 6
    loss, acc = compute_loss(cfg, model, batch, data.images, data.labels, None)
    assert loss.dim() == 0 and torch.isfinite(loss) and loss.requires_grad
    assert 0.0 <= acc <= 1.0
    loss.backward()
    assert any(p.grad is not None for p in model.parameters())


def test_objectives_name_their_head_normalisation_and_curve_label():
    table = {n: (o.head, o.embedding_norm, o.accuracy_label) for n, o in OBJECTIVES.items()}
    assert table["bce"] == ("l1", False, "train batches (pairs)")
    assert table["contrastive"] == ("euclidean", True, "train batches (pairs)")
    assert table["triplet"] == ("euclidean", True, "train batches (nearest neighbour)")
    assert table["proto"] == ("euclidean", False, "train episodes (queries)")
    assert TrainConfig(loss="contrastive").resolved().margin == 1.0
    assert TrainConfig(loss="triplet").resolved().margin == 0.2
    assert TrainConfig().resolved().rotate_classes == "auto"  # the default recipe, proto
    assert not TrainConfig(loss="bce").resolved().rotate_classes


def test_the_training_package_names_no_loss():
    folder = Path(siamnet.train.__file__).parent
    for path in folder.glob("*.py"):
        text = path.read_text()
        for name in OBJECTIVES:
            assert not re.search(rf"[\"']{name}[\"']", text), (path.name, name)


class CosineContrastive(ContrastiveObjective):
    """Contrastive loss, scored at evaluation by a cosine head: a user's own objective."""

    name = "cosine-contrastive"
    head = "cosine"
    accuracy_label = "train batches (pairs, cosine)"


def test_a_users_own_objective_trains_through_fit_and_its_checkpoint_loads(tmp_path):
    objective = CosineContrastive()
    assert isinstance(objective, Objective)
    cfg = TrainConfig(
        model="seed-cnn",
        epochs=1,
        steps_per_epoch=5,
        batch_size=16,
        val_pairs=200,
        val_episodes=20,
        out=str(tmp_path / "run"),
        quiet=True,
        device="cpu",
    )
    summary = fit(cfg, objective=objective)
    assert summary["loss"] == "cosine-contrastive"
    ckpt = load_checkpoint(tmp_path / "run" / "best.pt")
    assert ckpt.spec.loss == "cosine-contrastive" and ckpt.model.head.kind == "cosine"
    assert ckpt.spec.embedding_norm
    args = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert args["loss"] == "cosine-contrastive"
    assert (tmp_path / "run" / "curves.png").stat().st_size > 0


#: Run in a fresh interpreter, where the user's objective was never defined nor registered:
#: the checkpoint loads, evaluates, compares and answers the service's /compare.
FRESH_PROCESS = """
import sys
from fastapi.testclient import TestClient
from siamnet.checkpoint import load_checkpoint
from siamnet.data.registry import load_dataset
from siamnet.evaluate import evaluate_checkpoint
from siamnet.objectives import OBJECTIVES
from siamnet.serve.app import create_app
from siamnet.serve.service import png_bytes

run = sys.argv[1]
assert "cosine-contrastive" not in OBJECTIVES
ckpt = load_checkpoint(run + "/best.pt")
report = evaluate_checkpoint(ckpt, load_dataset("digits"), episodes=20, pairs=200).report
assert report["model"]["head"] == "cosine", report["model"]
assert report["verification"], report
images = load_dataset("digits").train.images
files = {"a": ("a.png", png_bytes(images[0])), "b": ("b.png", png_bytes(images[1]))}
app = create_app(run + "/best.pt", allowed_hosts=["testserver"])
answer = TestClient(app).post("/compare", files=files)
assert answer.status_code == 200, answer.text
print("ok", answer.json()["score"])
"""


def test_a_checkpoint_of_ones_own_objective_needs_no_registration_to_be_used(tmp_path):
    cfg = TrainConfig(
        model="seed-cnn",
        epochs=1,
        steps_per_epoch=3,
        batch_size=16,
        val_pairs=200,
        val_episodes=20,
        out=str(tmp_path / "run"),
        quiet=True,
        device="cpu",
    )
    fit(cfg, objective=CosineContrastive())
    meta = load_checkpoint(tmp_path / "run" / "best.pt").metadata
    assert meta["default_threshold"][0] == 0.0  # the cosine head's, recorded at training
    done = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS, str(tmp_path / "run")],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok ")


def test_episodes_lower_their_queries_to_fit_small_classes():
    from siamnet.objectives.proto import queries_that_fit

    three_each = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2])
    assert queries_that_fit(three_each, shots=1, queries=5) == 2
    assert queries_that_fit(torch.arange(10).repeat(20), shots=1, queries=5) == 5
    assert queries_that_fit(torch.tensor([0, 0, 1, 1]), shots=1, queries=5) == 1
