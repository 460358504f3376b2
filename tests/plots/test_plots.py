"""Every figure: written as a valid PNG of a sensible size, atomically, with bad inputs refused;
and the evaluation figures of a checkpoint on data."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image

from siamnet.checkpoint import load_checkpoint, save_checkpoint
from siamnet.data.registry import load_dataset
from siamnet.errors import ArgumentError
from siamnet.evaluate import evaluate_checkpoint
from siamnet.models.siamese import ModelSpec, build_model
from siamnet.plots.embedding_map import choose_points, plot_embedding_map
from siamnet.plots.episodes import plot_episodes, short_name
from siamnet.plots.figures import evaluation_figures
from siamnet.plots.pairs import plot_pairs, plot_predictions
from siamnet.plots.roc import plot_roc


def png_size(path: Path) -> tuple[int, int]:
    """Width and height of a PNG, checking that it is one and that no temporary is left."""
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.load()
        size = image.size
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    return size


def images(n: int, channels: int = 1, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, channels, 28, 28), dtype=torch.uint8, generator=g)


@pytest.mark.parametrize("channels", [1, 3])
def test_pairs_and_predictions(tmp_path, channels):
    left, right = images(8, channels), images(8, channels, seed=1)
    same = torch.tensor([0, 1] * 4).bool()
    fig = plot_pairs(left, right, same, tmp_path / "pairs.png", title="pairs")
    assert isinstance(fig, Figure) and fig.get_suptitle() == "pairs"
    width, height = png_size(tmp_path / "pairs.png")
    assert 600 <= width <= 2000 and 200 <= height <= 600 and width > height
    scores = torch.linspace(0, 1, 8)
    plot_predictions(left, right, same, scores, scores > 0.5, tmp_path / "pred.png")
    assert png_size(tmp_path / "pred.png")[0] >= 600


def test_pairs_refuse_mismatched_inputs_and_leave_no_file(tmp_path):
    with pytest.raises(ArgumentError, match="same length"):
        plot_pairs(images(4), images(3), torch.ones(4, dtype=torch.bool), tmp_path / "p.png")
    with pytest.raises(ArgumentError, match=r"\[B, C, H, W\]"):
        plot_pairs(images(2)[:, 0], images(2), torch.ones(2, dtype=torch.bool), tmp_path / "p.png")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_write_keeps_the_old_figure(tmp_path):
    path = tmp_path / "pairs.png"
    path.write_bytes(b"old")
    with pytest.raises(ArgumentError):
        plot_predictions(
            images(4),
            images(4),
            torch.ones(4, dtype=torch.bool),
            torch.ones(2),
            torch.ones(2, dtype=torch.bool),
            path,
        )
    assert path.read_bytes() == b"old"


def test_roc_and_histograms(tmp_path):
    g = torch.Generator().manual_seed(0)
    targets = torch.cat([torch.zeros(200), torch.ones(200)])
    scores = torch.randn(400, generator=g) + targets
    fig = plot_roc(scores, targets, 0.5, tmp_path / "roc.png", score_name="−distance")
    assert len(fig.axes) == 2  # ROC and the score histograms
    width, height = png_size(tmp_path / "roc.png")
    assert 900 <= width <= 1400 and 350 <= height <= 600
    with pytest.raises(ArgumentError, match="both"):
        plot_roc(scores, torch.ones(400), 0.5, tmp_path / "bad.png")


def test_embedding_map_marks_unseen_classes(tmp_path):
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(6).repeat_interleave(15)
    emb = torch.randn(6, 8, generator=g)[labels] + 0.3 * torch.randn(90, 8, generator=g)
    seen = [True, True, True, True, False, False]
    plot_embedding_map(emb, labels, list("abcdef"), seen, tmp_path / "map.png", method="tsne")
    assert png_size(tmp_path / "map.png")[0] >= 700
    with pytest.raises(ArgumentError, match="umap|method"):
        plot_embedding_map(emb, labels, list("abcdef"), seen, tmp_path / "m.png", method="pca")


def test_points_are_subsampled_to_at_most_20_classes_with_unseen_ones():
    labels = torch.arange(50).repeat_interleave(100)
    seen = [c < 40 for c in range(50)]
    index = choose_points(labels, seen, max_points=2000)
    chosen = set(labels[index].tolist())
    assert len(index) == 2000 and len(chosen) == 20
    assert sum(not seen[c] for c in chosen) == 10
    assert len(choose_points(labels[:300], seen, max_points=2000)) == 300  # all of 3 classes


def test_episodes(tmp_path):
    scores = torch.tensor([[0.9, 0.1, 0.2], [0.3, 0.8, 0.1]])
    plot_episodes(
        images(2),
        images(6).view(2, 3, 1, 28, 28),
        scores,
        torch.tensor([0, 2]),
        tmp_path / "ep.png",
        class_names=[["a", "b", "Greek/character03"]] * 2,
    )
    width, height = png_size(tmp_path / "ep.png")
    assert 500 <= width <= 1600 and 250 <= height <= 1000
    assert short_name("Greek/character03") == "character03"
    assert len(short_name("a-very-long-class-name")) == 12
    with pytest.raises(ArgumentError, match="at most 10 ways"):
        plot_episodes(
            images(1),
            images(11).view(1, 11, 1, 28, 28),
            torch.rand(1, 11),
            torch.tensor([0]),
            tmp_path / "wide.png",
        )


def test_evaluation_figures_of_a_checkpoint(tmp_path):
    torch.manual_seed(0)
    spec = ModelSpec(model="seed-cnn", loss="bce", head="l1")
    meta = {
        "model_spec": spec.to_dict(),
        "classes": ["0", "1", "2", "3", "4", "5"],
        "unseen_classes": ["6", "7", "8", "9"],
        "threshold": 0.5,
        "training_args": {"data": "digits"},
    }
    save_checkpoint(tmp_path / "m.pt", build_model(spec), meta)
    ckpt = load_checkpoint(tmp_path / "m.pt")
    dataset = load_dataset("digits")
    evaluation = evaluate_checkpoint(ckpt, dataset, pairs=500, ways=[4], shots=[1], episodes=50)
    paths = evaluation_figures(ckpt, dataset, evaluation, tmp_path / "figs", max_points=150)
    names = [p.name for p in paths]
    assert names == ["pairs.png", "predictions.png", "roc.png", "embeddings.png", "episodes.png"]
    for p in paths:
        width, height = png_size(p)
        assert width >= 500 and height >= 200


NO_BACKEND_SWITCH = """
import matplotlib
matplotlib.use("svg")  # a notebook's or a user's own choice
import numpy as np
import siamnet
from siamnet.plots.pairs import plot_pairs
x = np.random.default_rng(0).integers(0, 256, (120, 28, 28), dtype=np.uint8)
summary = siamnet.fit(data=(x, np.arange(120) % 6), model="seed-cnn", loss="contrastive",
                      epochs=1, steps_per_epoch=2, val_pairs=50, val_episodes=5,
                      out=__import__("sys").argv[1], quiet=True)
import torch
fig = plot_pairs(torch.zeros(2, 1, 28, 28, dtype=torch.uint8),
                 torch.zeros(2, 1, 28, 28, dtype=torch.uint8), torch.ones(2, dtype=torch.bool))
print(matplotlib.get_backend(), type(fig).__name__)
"""


def test_training_and_figures_leave_the_plotting_backend_alone(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", NO_BACKEND_SWITCH, str(tmp_path / "run")],
        capture_output=True,
        text=True,
        env=os.environ,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["svg", "Figure"]
    assert (tmp_path / "run" / "curves.png").stat().st_size > 0
