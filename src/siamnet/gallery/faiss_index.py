"""A gallery's own FAISS index: made (and trained) once when the gallery is built, saved in the
gallery folder as ``index.faiss`` and read back as it is when the gallery is loaded.

Methods (`INDEX_METHODS`): ``flat`` (exact), ``ivf-flat`` (an inverted file of `nlist` k-means
cells, `nprobe` of them visited per query; Jégou et al. 2011), ``ivf-pq`` (the same cells with
vectors compressed to `m` codes of `nbits` bits, product quantisation), ``hnsw`` (a graph of
`hnsw_m` neighbours per node, `ef_search` candidates kept per query; Malkov & Yashunin 2018).
The index holds the head's search vectors (`PairHead.search_vectors`) under the head's
`faiss_metric`. Its bytes are those of `faiss.write_index` (``faiss.serialize_index``), read
with ``faiss.deserialize_index``: loading never trains and never re-adds. Adding items to a
gallery adds their vectors to the trained index; a damaged or mismatched file is refused in
one line naming it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from siamnet.errors import ArgumentError, CheckpointError
from siamnet.presets import INDEX_DEFAULTS, INDEX_METHODS

#: The file of a gallery's index, inside the gallery folder.
INDEX_FILE = "index.faiss"

#: The faiss classes of each method's index (as `faiss.deserialize_index` gives them).
_INDEX_CLASSES = {
    "flat": ("IndexFlat", "IndexFlatL2", "IndexFlatIP"),
    "ivf-flat": ("IndexIVFFlat",),
    "ivf-pq": ("IndexIVFPQ",),
    "hnsw": ("IndexHNSWFlat",),
}

#: The options each method takes (besides ``method``), as named on the command line.
METHOD_OPTIONS = {
    "exact": (),
    "flat": (),
    "ivf-flat": ("nlist", "nprobe", "train_size"),
    "ivf-pq": ("nlist", "nprobe", "train_size", "m", "nbits"),
    "hnsw": ("hnsw_m", "ef_construction", "ef_search"),
}

_METRICS = ("l1", "l2", "ip")


@dataclass(frozen=True)
class IndexSpec:
    """How to index a gallery. ``None`` fields take their defaults: `nlist` about √N (at
    least 39 items per cell), `m` the largest divisor of the dimension up to D/4 and 64, the
    others `INDEX_DEFAULTS`."""

    method: str = "exact"
    nlist: int | None = None
    nprobe: int | None = None
    train_size: int | None = None
    m: int | None = None
    nbits: int | None = None
    hnsw_m: int | None = None
    ef_construction: int | None = None
    ef_search: int | None = None

    def given(self) -> dict[str, int]:
        """The options that were given (not None), besides the method."""
        return {k: v for k, v in asdict(self).items() if k != "method" and v is not None}

    def check(self) -> IndexSpec:
        """Raise `ArgumentError` for an unknown method, an option the method does not take or
        an option below 1 (before any work); returns self."""
        if self.method not in INDEX_METHODS:
            raise ArgumentError(
                f"--method {self.method}: expected one of {', '.join(INDEX_METHODS)}"
            )
        for name, value in self.given().items():
            flag = "--" + name.replace("_", "-")
            if name not in METHOD_OPTIONS[self.method]:
                takes = [m for m, names in METHOD_OPTIONS.items() if name in names]
                raise ArgumentError(
                    f"{flag} {value}: applies to --method {' or '.join(takes)}, not {self.method}"
                )
            if not isinstance(value, int) or value < 1:
                raise ArgumentError(f"{flag} {value}: expected a whole number of at least 1")
        if self.nbits is not None and self.nbits > 16:
            raise ArgumentError(f"--nbits {self.nbits}: expected 1 to 16 bits per code")
        return self

    def resolved(self, count: int, dim: int, metric: str) -> IndexSpec:
        """Every option of the method filled in for `count` items of size `dim`, checked
        against them (`ArgumentError` in one line, before any training)."""
        self.check()
        if self.method in ("exact", "flat"):
            return self
        if self.method == "hnsw":
            return replace(
                self,
                hnsw_m=self.hnsw_m or INDEX_DEFAULTS["hnsw_m"],
                ef_construction=self.ef_construction or INDEX_DEFAULTS["ef_construction"],
                ef_search=self.ef_search or INDEX_DEFAULTS["ef_search"],
            )
        nlist = self.nlist or max(1, min(int(math.sqrt(count)), count // 39))
        if nlist > count:
            raise ArgumentError(
                f"--nlist {nlist}: more cells than the {count} items to index; give at most "
                f"{count} (about √N is usual)"
            )
        out = replace(
            self,
            nlist=nlist,
            nprobe=self.nprobe or INDEX_DEFAULTS["nprobe"],
            train_size=self.train_size or INDEX_DEFAULTS["train_size"],
        )
        if self.method == "ivf-flat":
            return out
        out = replace(
            out, m=self.pq_codes(dim, metric), nbits=self.nbits or INDEX_DEFAULTS["nbits"]
        )
        if count < 2**out.nbits:
            raise ArgumentError(
                f"--method ivf-pq: {count} items, at least {2**out.nbits} needed to learn "
                f"{2**out.nbits} codes of --nbits {out.nbits}; give fewer --nbits or use ivf-flat"
            )
        return out

    def pq_codes(self, dim: int, metric: str) -> int:
        """``ivf-pq``: `m` (given, or the largest divisor of `dim` up to D/4 and 64), checked
        against the vectors' size `dim` and `metric`."""
        if metric == "l1":
            raise ArgumentError(
                "--method ivf-pq: FAISS compresses only Euclidean or inner-product vectors; "
                "this model's l1 head needs flat, ivf-flat or hnsw"
            )
        m = self.m or max(d for d in range(1, min(64, max(1, dim // 4)) + 1) if dim % d == 0)
        if dim % m:
            raise ArgumentError(
                f"--m {m}: the embedding size {dim} must be a multiple of the number of codes"
            )
        return m

    def check_for(self, dim: int, metric: str) -> IndexSpec:
        """`check`, and the checks that need only the vectors' size and metric (before any
        image is read); returns self."""
        self.check()
        if self.method != "exact":
            check_metric(metric)
        if self.method == "ivf-pq":
            self.pq_codes(dim, metric)
        return self

    def record(self) -> dict[str, Any]:
        """The description kept in ``gallery.json`` (method and every option)."""
        return {"method": self.method, **self.given()}


def spec_from_record(record: dict[str, Any]) -> IndexSpec:
    """The `IndexSpec` a gallery's ``index`` record describes."""
    fields = IndexSpec.__dataclass_fields__
    return IndexSpec(**{k: v for k, v in record.items() if k in fields})


def import_faiss() -> Any:
    """The faiss module, or a clear error saying how to install it."""
    try:
        import faiss
    except ImportError as exc:
        raise ArgumentError(
            "FAISS search needs the faiss package: pip install 'siamnet[faiss]' (faiss-cpu)"
        ) from exc
    return faiss


def faiss_metric(faiss: Any, metric: str) -> int:
    """FAISS's constant for a head's `faiss_metric` (``l1``, ``l2``, ``ip``)."""
    return {
        "l1": faiss.METRIC_L1,
        "l2": faiss.METRIC_L2,
        "ip": faiss.METRIC_INNER_PRODUCT,
    }[metric]


def train_index(vectors: torch.Tensor, metric: str, spec: IndexSpec, seed: int = 0) -> Any:
    """A new index of `spec` (resolved) over float32 `vectors` ``[N, D]``, trained (on at most
    `train_size` of them, drawn with `seed`) and holding all of them."""
    faiss = import_faiss()
    x = np.ascontiguousarray(vectors.detach().float().cpu().numpy())
    count, d = x.shape
    spec = spec.resolved(count, d, metric)
    kind = faiss_metric(faiss, metric)
    if spec.method == "flat":
        index = faiss.IndexFlat(d, kind)
    elif spec.method == "hnsw":
        index = faiss.IndexHNSWFlat(d, spec.hnsw_m, kind)
        index.hnsw.efConstruction = spec.ef_construction
        index.hnsw.efSearch = spec.ef_search
    else:
        quantizer = faiss.IndexFlat(d, kind)
        if spec.method == "ivf-flat":
            index = faiss.IndexIVFFlat(quantizer, d, spec.nlist, kind)
        else:
            index = faiss.IndexIVFPQ(quantizer, d, spec.nlist, spec.m, spec.nbits, kind)
        index.nprobe = spec.nprobe
        index.cp.min_points_per_centroid = 1  # a small gallery: no warning on stderr
        if spec.method == "ivf-pq":
            index.pq.cp.min_points_per_centroid = 1
        generator = torch.Generator().manual_seed(seed)
        sample = torch.randperm(count, generator=generator)[: max(spec.train_size, spec.nlist)]
        index.train(x[np.sort(sample.numpy())])
    index.add(x)
    return index


def add_vectors(index: Any, vectors: torch.Tensor) -> None:
    """Append `vectors` ``[M, D]`` to a trained index (never retrained)."""
    if len(vectors):
        index.add(np.ascontiguousarray(vectors.detach().float().cpu().numpy()))


def index_bytes(index: Any) -> memoryview:
    """The bytes `faiss.write_index` writes for `index`."""
    return memoryview(import_faiss().serialize_index(index))


def read_index(file: Path, raw: bytes, record: dict[str, Any], count: int, info_file: str) -> Any:
    """The index in `raw` (the bytes of `file`), checked against the gallery's `record` and
    its `count` of items; `CheckpointError` naming `file` if it is damaged or another's."""
    faiss = import_faiss()
    rebuild = "rebuild the gallery with 'siamnet index build --overwrite'"
    try:
        index = faiss.deserialize_index(np.frombuffer(raw, dtype=np.uint8))
    except Exception as exc:  # noqa: BLE001 - any failure to read is a damaged file
        reason = " ".join(str(exc).split())
        reason = reason if len(reason) <= 120 else reason[:117] + "..."
        raise CheckpointError(f"{file}: damaged FAISS index ({reason}); {rebuild}") from exc
    method = record["method"]
    found = type(index).__name__
    problem = None
    if found not in _INDEX_CLASSES.get(method, ()):
        problem = f"a {found}, not the {method} index {info_file} records"
    elif index.ntotal != count:
        problem = f"{index.ntotal} vectors, {info_file} records {count} items"
    elif index.d != record.get("dim"):
        problem = f"vectors of size {index.d}, {info_file} records {record.get('dim')}"
    elif index.metric_type != faiss_metric(faiss, record.get("metric", "")):
        problem = f"another metric than the {record.get('metric')} {info_file} records"
    elif not index.is_trained:
        problem = "an untrained index"
    if problem is not None:
        raise CheckpointError(f"{file}: holds {problem}; {rebuild}")
    return index


def search_parameters(index: Any, nprobe: int | None, ef_search: int | None) -> Any:
    """FAISS per-search parameters for `index` (None for a flat index)."""
    faiss = import_faiss()
    if isinstance(index, faiss.IndexIVF):
        return faiss.SearchParametersIVF(nprobe=int(nprobe or index.nprobe))
    if isinstance(index, faiss.IndexHNSW):
        return faiss.SearchParametersHNSW(efSearch=int(ef_search or index.hnsw.efSearch))
    return None


def check_metric(metric: str) -> str:
    if metric not in _METRICS:
        raise ArgumentError(f"this head has no FAISS metric ({metric!r}); use exact search")
    return metric
