"""Embedding images in batches: the batch size by image size and device, and the same
embeddings whatever the batch size."""

from __future__ import annotations

import pytest
import torch

from siamnet.errors import ArgumentError
from siamnet.evaluate import embed_images, embedding_batch_size
from siamnet.models.siamese import ModelSpec, build_model


def test_embedding_batch_size_by_image_size_and_device():
    assert embedding_batch_size((28, 28), "cpu") == 128
    assert embedding_batch_size((105, 105), "cpu") == 8
    assert embedding_batch_size((4, 4), "cpu") == 512
    assert embedding_batch_size((1000, 1000), "cpu") == 1
    assert embedding_batch_size((105, 105), "cuda") == 512


def test_embeddings_do_not_depend_on_the_batch_size():
    model = build_model(ModelSpec(model="conv4", image_size=(28, 28))).eval()
    images = torch.randint(0, 256, (300, 1, 28, 28), dtype=torch.uint8)
    auto = embed_images(model, images)
    assert auto.shape == (300, model.backbone.out_dim)
    assert torch.allclose(auto, embed_images(model, images, batch_size=7), atol=1e-5)
    with pytest.raises(ArgumentError, match="--batch-size 0"):
        embed_images(model, images, batch_size=0)
