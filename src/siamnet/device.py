"""Choosing the device to compute on."""

from __future__ import annotations

import torch

from siamnet.errors import ArgumentError


def resolve_device(name: str = "auto") -> torch.device:
    """Map ``auto|cpu|cuda|cuda:N|mps`` to a `torch.device`, checking it exists."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ArgumentError(f"--device {name!r}: expected auto, cpu, cuda, cuda:N or mps") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ArgumentError(f"--device {name}: CUDA is not available on this machine; use cpu")
    if device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ArgumentError(f"--device {name}: MPS is not available on this machine; use cpu")
    return device
