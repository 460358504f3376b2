"""siamnet: Siamese networks and one-shot image recognition in PyTorch."""

from siamnet.errors import ArgumentError, CheckpointError, DataError, SiamnetError

__version__ = "0.1.0"

__all__ = ["ArgumentError", "CheckpointError", "DataError", "SiamnetError", "__version__"]
