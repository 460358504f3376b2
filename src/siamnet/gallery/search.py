"""Searching a gallery, exact by default: every item scored by the model's own head against
the gallery it prepared once (`PairHead.prepare`, `PairHead.prepared_scores`), in batched
tensor operations (`ExactSearch`): a matrix product for ``euclidean`` and ``cosine`` heads, and
for the ``l1`` head the weighted L1 distance as two `torch.cdist` calls
(`siamnet.models.heads.weighted_l1`). `RerankSearch` (``l1`` only) scores a candidate pool by
the head; `IndexSearch` searches the gallery's own saved FAISS index (``flat``, ``ivf-flat``,
``ivf-pq``, ``hnsw``; `siamnet.gallery.faiss_index`), which `make_searcher` uses by default;
`FaissSearch` builds a flat (exact) or IVF (approximate) FAISS index at search time. Every
searcher says how it searches (`describe`: the method, and ``nprobe`` or ``ef_search`` for an
approximate one).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch

from siamnet.errors import ArgumentError, CheckpointError, DataError
from siamnet.gallery.faiss_index import (
    INDEX_DEFAULTS,
    INDEX_METHODS,
    faiss_metric,
    import_faiss,
    search_parameters,
)
from siamnet.gallery.store import Gallery
from siamnet.infer import SCORE_BLOCK
from siamnet.models.heads import HEADS, PairHead, build_head
from siamnet.presets import SEARCH_METHODS


class ExactSearch:
    """Exact top-k by the model's own head score, in batched tensor operations.

    The head prepares the gallery once (`PairHead.prepare`) and scores each chunk of queries
    against it (`PairHead.prepared_scores`); queries are processed in chunks so that each
    ``[q, N]`` score block stays under `block` elements and every item is scored.
    """

    def __init__(self, embeddings: torch.Tensor, head: PairHead, block: int = SCORE_BLOCK) -> None:
        self.head = head
        self.block = block
        self.count = len(embeddings)
        self.device = embeddings.device
        self.prepared = head.prepare(embeddings.float())

    @torch.no_grad()
    def search(self, queries: torch.Tensor, top_k: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
        """Queries ``[Q, D]`` -> indices int64 ``[Q, k]`` and scores ``[Q, k]`` (best first)."""
        k = _clamp_k(top_k, self.count)
        q = queries.to(self.device, torch.float32)
        rows = max(1, self.block // max(1, self.count))
        idx, scores = [], []
        for i in range(0, len(q), rows):
            top = self.head.prepared_scores(q[i : i + rows], self.prepared).topk(k, dim=1)
            idx.append(top.indices)
            scores.append(self.head.key_to_score(top.values))
        if not idx:
            return torch.zeros(0, k, dtype=torch.int64), torch.zeros(0, k)
        return torch.cat(idx).cpu(), torch.cat(scores).float().cpu()

    def describe(self) -> dict[str, Any]:
        return {"method": "exact"}


class RerankSearch:
    """``l1`` head, approximate: a candidate pool by the L1 distance of embeddings rescaled by
    the head's negative weights, then every candidate scored by the head.

    The pool (``max(pool_factor·k, min_pool)`` items) is exact when no weight of the head is
    positive (the rescaled L1 distance then orders items as the head does); a positive weight
    can move an item outside the pool above one in it, so the result may differ from
    `ExactSearch` there.
    """

    def __init__(
        self,
        embeddings: torch.Tensor,
        head: PairHead,
        pool_factor: int = 10,
        min_pool: int = 256,
        candidates: Any | None = None,
    ) -> None:
        if head.faiss_metric != "l1":
            raise ArgumentError(f"rerank search is for the l1 head, this model's is {head.kind!r}")
        self.head = head
        self.g = embeddings.float()
        self.cand_vectors = head.search_vectors(self.g) if candidates is None else None
        self.pool_factor, self.min_pool = pool_factor, min_pool
        self.candidates = candidates  # a FaissSearch-like object over the rescaled items, or None

    def pool_size(self, top_k: int) -> int:
        return min(len(self.g), max(self.pool_factor * top_k, self.min_pool))

    @torch.no_grad()
    def search(self, queries: torch.Tensor, top_k: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
        """Queries ``[Q, D]`` -> indices int64 ``[Q, k]`` and scores ``[Q, k]`` (best first)."""
        k = _clamp_k(top_k, len(self.g))
        pool = self.pool_size(k)
        q = queries.to(self.g.device, torch.float32)
        rows = max(1, SCORE_BLOCK // max(1, pool * self.g.shape[1], len(self.g)))
        idx, scores = [], []
        for i in range(0, len(q), rows):
            chunk = q[i : i + rows]
            if self.candidates is not None:
                cand = self.candidates(chunk, pool).to(self.g.device)  # [q, pool], -1 = none
            else:
                dist = torch.cdist(self.head.search_vectors(chunk), self.cand_vectors, p=1)
                cand = dist.topk(pool, dim=1, largest=False).indices
            safe = cand.clamp_min(0)
            logits = self.head(chunk[:, None, :], self.g[safe])  # [q, pool]
            top = logits.masked_fill(cand < 0, float("-inf")).topk(k, dim=1)
            idx.append(safe.gather(1, top.indices))
            scores.append(self.head.to_score(top.values))
        if not idx:
            return torch.zeros(0, k, dtype=torch.int64), torch.zeros(0, k)
        return torch.cat(idx).cpu(), torch.cat(scores).float().cpu()

    def describe(self) -> dict[str, Any]:
        return {"method": "rerank"}


class FaissSearch:
    """FAISS search (the optional ``faiss`` extra), on CPU.

    ``index="flat"``: exact (IndexFlatL2 for ``euclidean``, IndexFlatIP on normalised vectors
    for ``cosine``). ``index="ivf"``: an inverted file of `nlist` k-means cells (by default
    about ``√N``, trained on up to `train_size` items) of which `nprobe` are visited per query
    (Jégou et al. 2011), approximate. For the ``l1`` head FAISS proposes candidates by L1
    distance (as in `RerankSearch`) and the head scores them.
    """

    def __init__(
        self,
        embeddings: torch.Tensor,
        head: PairHead,
        index: str = "flat",
        nlist: int | None = None,
        nprobe: int = 8,
        train_size: int = 50_000,
        seed: int = 0,
    ) -> None:
        check_search_options(nprobe=nprobe)
        faiss = import_faiss()
        self.head = head
        self.kind = index
        g = embeddings.detach().float().cpu()
        vectors = head.search_vectors(g)  # raises for a head FAISS cannot index
        metric = faiss_metric(faiss, head.faiss_metric)
        x = vectors.contiguous().numpy()
        d = x.shape[1]
        if index == "flat":
            self.index = faiss.IndexFlat(d, metric)
        elif index == "ivf":
            nlist = nlist or max(1, min(int(len(x) ** 0.5), len(x) // 39))
            quantizer = faiss.IndexFlat(d, metric)
            self.index = faiss.IndexIVFFlat(quantizer, d, nlist, metric)
            generator = torch.Generator().manual_seed(seed)
            sample = torch.randperm(len(x), generator=generator)[: max(train_size, nlist)]
            self.index.train(x[sample.numpy()])
            self.index.nprobe = nprobe
        else:
            raise ArgumentError(f"FAISS index {index!r}: expected 'flat' or 'ivf'")
        self.index.add(x)
        self.rerank = (
            RerankSearch(g, head, candidates=self._candidates)
            if metric == faiss.METRIC_L1
            else None
        )

    def _candidates(self, q: torch.Tensor, pool: int) -> torch.Tensor:
        qn = self.head.search_vectors(q.detach().float().cpu())
        _, ids = self.index.search(qn.contiguous().numpy(), pool)
        return torch.from_numpy(ids)

    @torch.no_grad()
    def search(self, queries: torch.Tensor, top_k: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
        """Queries ``[Q, D]`` -> indices ``[Q, k]`` (-1 where an IVF search found fewer than k)
        and scores ``[Q, k]``."""
        if self.rerank is not None:
            return self.rerank.search(queries, top_k)
        k = _clamp_k(top_k, self.index.ntotal)
        q = self.head.search_vectors(queries.detach().float().cpu())
        values, ids = self.index.search(q.contiguous().numpy(), k)
        values, ids = torch.from_numpy(values), torch.from_numpy(ids)
        scores = self.head.faiss_to_score(values)
        return ids, scores.masked_fill(ids < 0, float("-inf"))

    def describe(self) -> dict[str, Any]:
        if self.kind == "ivf":
            return {"method": "faiss-ivf", "nprobe": int(self.index.nprobe)}
        return {"method": "faiss"}


class IndexSearch:
    """Search with a gallery's own saved FAISS index, as it was trained (never retrained):
    ``nprobe`` cells per query (IVF) or ``ef_search`` candidates (HNSW), by default those
    recorded with the index. For the ``l1`` head the index proposes candidates (as in
    `RerankSearch`) and the head scores them."""

    def __init__(
        self,
        gallery: Gallery,
        head: PairHead,
        nprobe: int | None = None,
        ef_search: int | None = None,
    ) -> None:
        check_search_options(
            nprobe=1 if nprobe is None else nprobe, ef_search=1 if ef_search is None else ef_search
        )
        if gallery.index is None or gallery.index_record is None:
            raise ArgumentError(f"{gallery.path}: the gallery has no FAISS index (exact search)")
        self.head = head
        self.index = gallery.index
        self.method = gallery.method
        record = gallery.index_record
        self.nprobe = self.ef_search = None
        if self.method in ("ivf-flat", "ivf-pq"):
            self.nprobe = nprobe or record.get("nprobe") or INDEX_DEFAULTS["nprobe"]
        elif self.method == "hnsw":
            self.ef_search = ef_search or record.get("ef_search") or INDEX_DEFAULTS["ef_search"]
        self.params = search_parameters(self.index, self.nprobe, self.ef_search)
        self.rerank = (
            RerankSearch(gallery.embeddings, head, candidates=self._candidates)
            if head.faiss_metric == "l1"
            else None
        )

    def _raw(self, q: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.head.search_vectors(q.detach().float().cpu()).contiguous().numpy()
        # faiss.contrib.torch_utils (imported by pytorch-metric-learning, for one) replaces
        # Index.search with a version that takes no search parameters and keeps faiss's own
        # as search_numpy
        search = getattr(self.index, "search_numpy", self.index.search)
        values, ids = search(x, k, params=self.params)
        return torch.from_numpy(values), torch.from_numpy(ids)

    def _candidates(self, q: torch.Tensor, pool: int) -> torch.Tensor:
        return self._raw(q, pool)[1]

    @torch.no_grad()
    def search(self, queries: torch.Tensor, top_k: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
        """Queries ``[Q, D]`` -> indices ``[Q, k]`` (-1 where an approximate search found fewer
        than k) and scores ``[Q, k]``, best first."""
        if self.rerank is not None:
            return self.rerank.search(queries, top_k)
        values, ids = self._raw(queries, _clamp_k(top_k, self.index.ntotal))
        scores = self.head.faiss_to_score(values)
        return ids, scores.masked_fill(ids < 0, float("-inf"))

    def describe(self) -> dict[str, Any]:
        """The method, and ``nprobe`` (IVF) or ``ef_search`` (HNSW)."""
        out: dict[str, Any] = {"method": self.method}
        if self.nprobe is not None:
            out["nprobe"] = int(self.nprobe)
        if self.ef_search is not None:
            out["ef_search"] = int(self.ef_search)
        return out


Searcher = ExactSearch | RerankSearch | FaissSearch | IndexSearch


def head_for(gallery: Gallery, head: PairHead | None = None) -> PairHead:
    """The head to score `gallery` with: the model's, or one rebuilt from the recorded kind
    (only possible for heads without weights)."""
    if head is not None:
        if head.kind != gallery.head:
            raise CheckpointError(
                f"{gallery.path}: gallery made with a {gallery.head!r} head, "
                f"the model has {head.kind!r}"
            )
        return head
    if HEADS[gallery.head].has_weights:
        raise ArgumentError(
            f"searching an {gallery.head}-head gallery needs the model's head (head=)"
        )
    return build_head(gallery.head, gallery.dim)


def make_searcher(
    gallery: Gallery, head: PairHead | None = None, method: str | None = None, **options: Any
) -> Searcher:
    """A searcher over `gallery`: by default (`method` None) the gallery's own method, its
    saved FAISS index as it is (options ``nprobe``, ``ef_search``) or exact search; else
    ``exact``, ``rerank``, or ``faiss`` / ``faiss-ivf`` (an index made now), or the name of the
    gallery's own index method."""
    h = head_for(gallery, head)
    if method is None or (method == gallery.method and method != "exact"):
        if gallery.index is not None:
            return IndexSearch(gallery, h, **options)
        method = "exact"
    gallery.need_whole(f"{method} search")
    if method == "exact":
        return ExactSearch(gallery.embeddings, h, **options)
    if method == "rerank":
        return RerankSearch(gallery.embeddings, h, **options)  # type: ignore[arg-type]
    if method == "faiss":
        return FaissSearch(gallery.embeddings, h, index="flat", **options)
    if method == "faiss-ivf":
        return FaissSearch(gallery.embeddings, h, index="ivf", **options)
    if method in INDEX_METHODS:
        raise ArgumentError(
            f"{gallery.path}: search method {method!r}: the gallery has no {method} index (its "
            f"method is {gallery.method}); build it with 'siamnet index build --method {method}'"
        )
    raise ArgumentError(
        f"search method {method!r}: expected one of {', '.join(SEARCH_METHODS + INDEX_METHODS)}"
    )


def search(
    gallery: Gallery,
    queries: torch.Tensor,
    top_k: int = 5,
    head: PairHead | None = None,
    method: str | None = None,
    **options: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k gallery items of each query embedding ``[Q, D]``: indices int64 ``[Q, k]`` and
    user-facing scores ``[Q, k]``, best first, by the gallery's own method unless `method`
    (see `make_searcher`). `head` is the model's (required for ``l1``)."""
    if queries.dim() != 2 or queries.shape[1] != gallery.dim:
        raise DataError(f"query embeddings: expected [Q, {gallery.dim}], got {list(queries.shape)}")
    return make_searcher(gallery, head, method, **options).search(queries, top_k)


def search_matches(
    gallery: Gallery,
    indices: list[int],
    scores: list[float],
    threshold: float | None = None,
    public: bool = False,
) -> list[dict[str, Any]]:
    """One query's matches, best first, from a row of `search`'s indices and scores ``[k]``:
    ``rank``, ``index``, ``file``, ``label``, ``score`` (None when not finite: JSON has no
    infinity) and ``same`` (``score >= threshold``; None without a threshold). Places an IVF
    search left empty (index -1) are left out.

    `public` is for answers sent over the network: files by their base name only, and every
    name through `shown_name`.
    """
    matches = []
    for rank, (i, s) in enumerate(zip(indices, scores, strict=True), start=1):
        if i < 0:
            continue
        file, label = gallery.files[i], gallery.labels[i]
        if public:
            file = shown_name(Path(file).name)
            label = None if label is None else shown_name(label)
        score = float(s) if math.isfinite(s) else None
        same = None if threshold is None or score is None else score >= threshold
        matches.append(
            {"rank": rank, "index": i, "file": file, "label": label, "score": score, "same": same}
        )
    return matches


def shown_name(name: str | os.PathLike[str]) -> str:
    """A file or class name as text that UTF-8 (and so JSON) can carry.

    A name whose bytes are not UTF-8 (a file named ``b"\\xff"`` on Linux) reaches Python with
    surrogate escapes, which no UTF-8 encoder accepts; those bytes are written ``\\xff``
    instead. Every other name is returned as it is.
    """
    text = os.fspath(name)
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate that is not an escaped byte
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


def check_search_options(top_k: int = 1, nprobe: int = 1, ef_search: int = 1) -> None:
    """``--top-k`` (items per query), ``--nprobe`` (IVF cells visited per query) and
    ``--ef-search`` (HNSW candidates kept per query) must be at least 1."""
    if top_k < 1:
        raise ArgumentError(f"--top-k {top_k}: expected a positive number")
    if nprobe < 1:
        raise ArgumentError(f"--nprobe {nprobe}: expected at least 1 cell visited per query")
    if ef_search < 1:
        raise ArgumentError(f"--ef-search {ef_search}: expected at least 1 candidate per query")


def _clamp_k(top_k: int, count: int) -> int:
    check_search_options(top_k=top_k)
    if count == 0:
        raise DataError("the gallery is empty")
    return min(top_k, count)
