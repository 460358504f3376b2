"""Session fixtures of the gallery tests: small trained checkpoints (contrastive and bce)."""

from __future__ import annotations

import pytest

from siamnet.checkpoint import load_checkpoint

from shapes_model import write_checkpoint


@pytest.fixture(scope="session")
def ckpt_path(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("gallery-ckpt") / "shapes.pt", "contrastive")


@pytest.fixture(scope="session")
def ckpt(ckpt_path):
    return load_checkpoint(ckpt_path)


@pytest.fixture(scope="session")
def bce_ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("gallery-bce") / "shapes.pt"
    return load_checkpoint(write_checkpoint(path, "bce"))
