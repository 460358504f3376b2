"""The default recipe on colour photographs of 64 pixels (the photo rule of siamnet/presets.py):
it trains stably and, on classes never seen in training, beats raw-pixel nearest neighbour on
the same episodes and in retrieval. Before the rule, the same run's first-epoch loss was in the
hundreds (conv4-map's 4,096-d maps under squared distances)."""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

import pytest
import torch

from siamnet.checkpoint import load_checkpoint
from siamnet.presets import PHOTO_QUERIES, PHOTO_WAYS

from helpers import siamnet

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from timm_photos import write_photo_folder  # noqa: E402  (the benchmark's generated photos)

pytestmark = pytest.mark.slow


def test_the_default_recipe_learns_on_colour_photos(tmp_path):
    data = write_photo_folder(tmp_path / "photos", classes=16, per_class=6, seed=0)
    run = tmp_path / "run"
    trained = siamnet(
        "train", "--data", data, "--eval-fraction", "0.25", "--image-size", "64", "--epochs",
        "1", "--steps-per-epoch", "15", "--out", run, "--quiet", "--json",
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    spec = load_checkpoint(run).spec
    assert (spec.model, spec.embedding_norm, spec.in_channels) == ("conv4-pool", True, 3)
    args = load_checkpoint(run).metadata["training_args"]
    assert (args["ways"], args["queries"]) == (PHOTO_WAYS, PHOTO_QUERIES)  # bounded episodes
    with (run / "metrics.csv").open() as f:
        loss = float(next(csv.DictReader(f))["train_loss"])
    ways = 12  # every training class in each episode (16 less the 4 held out)
    assert math.isfinite(loss) and loss < 2 * math.log(ways), loss  # chance is log(12)
    evaluated = siamnet("evaluate", run, "--ways", "4", "--episodes", "200", "--json", "-")
    assert evaluated.returncode == 0, evaluated.stderr
    report = json.loads(evaluated.stdout)
    assert report["evaluation_data"]["unseen_classes"] is True
    model = next(r for r in report["one_shot"] if r["shots"] == 1)
    pixels = next(r for r in report["one_shot_pixels"] if r["shots"] == 1)
    assert model["accuracy"] > pixels["accuracy"] + 0.05, (model, pixels)
    recall = report["retrieval"]["recall_at_k"]["1"]
    assert recall > report["retrieval_pixels"]["recall_at_k"]["1"]


def test_photo_episodes_only_where_the_default_recipe_chose_them(tmp_path):
    from siamnet.data.labeled import LabeledImages
    from siamnet.train.config import TrainConfig
    from siamnet.train.data import TrainData
    from siamnet.train.model import photo_episodes

    def data(channels: int, side: int) -> TrainData:
        images = LabeledImages(
            torch.zeros(8, channels, side, side, dtype=torch.uint8),
            torch.arange(8) % 4,
            ["a", "b", "c", "d"],
        )
        return TrainData(images, images, "examples", None, None, [])

    cfg = TrainConfig(out=str(tmp_path / "r")).resolved()
    photo = photo_episodes(cfg, data(3, 64), episodes_given=False)
    assert (photo.ways, photo.queries) == (PHOTO_WAYS, PHOTO_QUERIES)
    assert photo_episodes(cfg, data(3, 64), episodes_given=True) is cfg  # --ways/--queries
    assert photo_episodes(cfg, data(1, 28), episodes_given=False) is cfg  # grey glyphs
    own_model = TrainConfig(out=str(tmp_path / "r"), model="conv4").resolved()
    assert photo_episodes(own_model, data(3, 64), episodes_given=False) is own_model
