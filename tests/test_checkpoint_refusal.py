"""Any file that is not a whole siamnet checkpoint is refused with CheckpointError, not a crash."""

from __future__ import annotations

import pickle
import random

import pytest
import torch

from siamnet.checkpoint import read_checkpoint_payload
from siamnet.errors import CheckpointError

from shapes_model import write_checkpoint


def test_random_bytes_of_many_kinds_are_refused(tmp_path):
    """Arbitrary bytes fail the unpickler in many ways (IndexError, KeyError, ...): all refused."""
    rng = random.Random(0)
    path = tmp_path / "noise.pt"
    starts = [b"", b"\x80\x02", b"\x80\x04", b"PK\x03\x04"]  # raw, pickle 2, pickle 4, zip
    for i in range(400):
        size = rng.choice([1, 7, 64, 4096])
        path.write_bytes(starts[i % len(starts)] + rng.randbytes(size))
        with pytest.raises(CheckpointError, match="noise.pt"):
            read_checkpoint_payload(path)


def test_truncated_checkpoints_are_refused(tmp_path):
    whole = write_checkpoint(tmp_path / "whole.pt", "contrastive").read_bytes()
    cut = tmp_path / "cut.pt"
    for fraction in (0.01, 0.1, 0.5, 0.9, 0.999):
        cut.write_bytes(whole[: int(len(whole) * fraction)])
        with pytest.raises(CheckpointError, match="cut.pt"):
            read_checkpoint_payload(cut)


def test_a_plain_pickle_is_unreadable(tmp_path):
    path = tmp_path / "plain.pt"
    path.write_bytes(pickle.dumps({"model": [1, 2, 3]}, protocol=2))
    with pytest.raises(CheckpointError, match="plain.pt: not a siamnet checkpoint .unreadable"):
        read_checkpoint_payload(path)


def test_a_torch_file_of_other_weights_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "state.pt"
    torch.save({"model": {"weight": torch.zeros(2)}}, path)
    with pytest.raises(CheckpointError, match="state.pt: not a siamnet checkpoint .no 'siamnet"):
        read_checkpoint_payload(path)


def test_a_pickle_the_weights_unpickler_cannot_read_says_why_in_one_line(tmp_path):
    path = tmp_path / "new.pt"
    torch.save({"model": [1, 2, 3]}, path, pickle_protocol=5, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError) as caught:
        read_checkpoint_payload(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and "\n" not in message and len(message) < 400
    assert "PyTorch 2.6" not in message  # torch's long advice is cut down to its detail
