"""Models: backbones that embed images, heads that score two embeddings, the twin network."""

from siamnet.models.backbones import BACKBONES, build_backbone
from siamnet.models.embed import embed_images, embedding_batch_size
from siamnet.models.heads import CosineHead, DistanceHead, L1Head, PairHead, build_head
from siamnet.models.siamese import ModelSpec, Normalizer, SiameseNet, build_model

__all__ = [
    "BACKBONES",
    "CosineHead",
    "DistanceHead",
    "L1Head",
    "ModelSpec",
    "Normalizer",
    "PairHead",
    "SiameseNet",
    "build_backbone",
    "build_head",
    "build_model",
    "embed_images",
    "embedding_batch_size",
]
