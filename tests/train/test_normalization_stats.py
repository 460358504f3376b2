"""Per-channel statistics of the training images, computed a chunk at a time."""

from __future__ import annotations

import pytest
import torch

from siamnet.train.data import channel_stats


def test_chunked_stats_equal_the_whole_set_at_once():
    images = torch.randint(
        0, 256, (700, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    mean, std = channel_stats((images[i : i + 256] for i in range(0, 700, 256)), 3)
    whole = images.double() / 255.0
    assert mean == pytest.approx(whole.mean(dim=(0, 2, 3)).tolist(), abs=1e-12)
    assert std == pytest.approx(whole.std(dim=(0, 2, 3)).tolist(), abs=1e-12)
