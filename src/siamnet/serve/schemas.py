"""The JSON answers of the HTTP service, as Pydantic models (they make the OpenAPI description)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ErrorAnswer(BaseModel):
    detail: str = Field(description="what was wrong, in one line")


class CompareAnswer(BaseModel):
    score: float = Field(description="similarity; higher is more alike")
    same: bool | None = Field(description="score >= threshold; null without a threshold")
    threshold: float | None = Field(description="the decision threshold used")
    distance: float | None = Field(None, description="embedding distance (distance heads only)")
    head: str = Field(description="how two embeddings are scored: l1, euclidean or cosine")


class ClassScore(BaseModel):
    class_index: int
    name: str
    score: float | None
    image_url: str = Field(description="a PNG of one support image of this class")


class ClassifyAnswer(BaseModel):
    label: str | None = Field(description="the predicted class; null when unknown")
    score: float | None = Field(description="score of the best class")
    best: str = Field(description="the best-scoring class, even when unknown")
    runner_up: str | None
    runner_up_score: float | None
    unknown: bool = Field(description="the best score fell below reject_below")
    reject_below: float | None
    ranking: list[ClassScore] = Field(description="every support class, best first")


class Match(BaseModel):
    rank: int
    index: int = Field(description="the item's position in the gallery")
    file: str = Field(description="the item's file name")
    label: str | None
    score: float | None
    same: bool | None = Field(description="score >= threshold; null without a threshold")


class ClassifyManyAnswer(BaseModel):
    reject_below: float | None
    results: list[ClassifyAnswer] = Field(description="one per uploaded image, in order")


class SearchMethod(BaseModel):
    method: str = Field(
        description="exact, or the gallery's FAISS index: flat, ivf-flat, ivf-pq or hnsw"
    )
    nprobe: int | None = Field(None, description="IVF cells visited per query (ivf-*)")
    ef_search: int | None = Field(None, description="candidates explored per query (hnsw)")


class SearchAnswer(BaseModel):
    top_k: int = Field(description="items asked for per image")
    k: int = Field(description="the same as top_k (its older name)")
    threshold: float | None
    search: SearchMethod = Field(description="how the gallery was searched")
    matches: list[Match]


class SearchResult(BaseModel):
    matches: list[Match]


class SearchManyAnswer(BaseModel):
    top_k: int = Field(description="items asked for per image")
    k: int = Field(description="the same as top_k (its older name)")
    threshold: float | None
    search: SearchMethod = Field(description="how the gallery was searched")
    results: list[SearchResult] = Field(description="one per uploaded image, in order")


class ModelIdentity(BaseModel):
    checkpoint: str = Field(description="the checkpoint's file name")
    sha256: str = Field(
        description="sha256 of the model's description and weights, as a gallery records it"
    )
    model: str
    head: str
    dim: int = Field(description="length of each embedding")


class EmbedAnswer(BaseModel):
    model: ModelIdentity = Field(description="the model that made these embeddings")
    embeddings: list[list[float]] = Field(description="one vector per uploaded image, in order")


class HealthAnswer(BaseModel):
    status: str = "ok"


class SupportInfo(BaseModel):
    classes: list[str]
    images: int
    scoring: str
    skipped: int = Field(description="unreadable files left out at start-up")


class GalleryInfo(BaseModel):
    items: int
    labelled: int
    dim: int
    search: SearchMethod = Field(description="how the gallery is searched")
    skipped: int = Field(description="unreadable files left out at start-up")


class InfoAnswer(BaseModel):
    checkpoint: str
    model: str
    head: str
    loss: str
    in_channels: int
    image_size: list[int]
    classes: list[str] = Field(description="the classes the model was trained on")
    threshold: float | None
    invert: bool = Field(description="uploads are inverted (255 - value) before use")
    checkpoint_version: str | None = Field(description="siamnet version that wrote the model")
    version: str = Field(description="siamnet version of this service")
    device: str
    support: SupportInfo | None
    gallery: GalleryInfo | None
    max_top_k: int
    max_images: int = Field(description="most images one request may carry")
    batch_window_ms: float = Field(description="how long a model call waits for more requests")
    max_batch: int = Field(description="most images one model call takes (1: no batching)")
    model_calls: int = Field(description="model calls made for requests since start-up")
    embedded_images: int = Field(description="images those calls embedded")
    max_upload_bytes: int
