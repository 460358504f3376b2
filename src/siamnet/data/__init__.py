"""Data: loaders for every format, splits, pair and episode samplers, augmentation."""

from siamnet.data.labeled import LabeledImages

__all__ = ["LabeledImages"]
