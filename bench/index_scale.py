"""Galleries of a million items: build time, index file size, load time, queries/s and recall@10
of each saved FAISS index (flat, ivf-flat, ivf-pq, hnsw) against exact search, in one run.

Data: `--n` random unit vectors (float32) of each dimension in `--dims` (64 and 512), with
`--planted` near neighbours planted around each of `--queries` random query vectors (unit
vectors at distances 0.2 to 0.6 from their query, where random items lie near √2), so that a
query's true top-10 is well defined. Everything goes through the library: a `Gallery` of the
vectors (euclidean head), `with_index` (training and adding), `save_gallery` (the gallery folder
with ``index.faiss``), `load_gallery` (which reads the index as saved: every FAISS ``train`` and
``add`` raises while loading and searching, so a load that trained would fail the run) and
`make_searcher` (the gallery's own method). The baseline, in the same run, is exact search
(`ExactSearch`, the default of a gallery without an index) over the same loaded gallery; recall@10
is against its top-10, and "vs exact" the ratio of queries/s. IVF indexes are searched with
each `--nprobe`, HNSW with each `--ef-search`, on the same loaded index (search-time settings).

    python bench/index_scale.py                                  # 1,000,000 items, dims 64 and 512
    python bench/index_scale.py --n 20000 --queries 100 --no-write --json out.json   # a smoke run

Targets: loading ≤ 2 s with no training; an approximate method at recall@10 ≥ 0.95 and ≥ 50x
the queries/s of exact search.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import faiss
import torch

from siamnet.gallery import (
    ExactSearch,
    Gallery,
    IndexSpec,
    load_gallery,
    make_searcher,
    save_gallery,
    with_index,
)
from siamnet.gallery.faiss_index import INDEX_FILE
from siamnet.models.heads import DistanceHead

from results import machine, table, write_section

K = 10
TARGET_RECALL, TARGET_SPEEDUP, TARGET_LOAD_S = 0.95, 50.0, 2.0


def planted_vectors(
    n: int, dim: int, queries: int, planted: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit vectors ``[n, dim]`` and queries ``[queries, dim]``: each query has `planted`
    items at distances 0.2 to 0.6 from it, at random places of the gallery."""
    g = torch.Generator().manual_seed(seed)
    items = torch.empty(n, dim)
    for i in range(0, n, 100_000):  # in blocks: no second copy of the whole gallery
        block = torch.randn(min(100_000, n - i), dim, generator=g)
        items[i : i + len(block)] = torch.nn.functional.normalize(block, dim=1)
    q = torch.nn.functional.normalize(torch.randn(queries, dim, generator=g), dim=1)
    # a point at distance r from unit q on the unit sphere: cos = 1 - r²/2 along q
    r = 0.2 + 0.4 * torch.rand(queries, planted, generator=g)
    away = torch.randn(queries, planted, dim, generator=g)
    away -= (away * q[:, None]).sum(-1, keepdim=True) * q[:, None]  # orthogonal to q
    away = torch.nn.functional.normalize(away, dim=-1)
    cos = 1 - r**2 / 2
    near = cos[..., None] * q[:, None] + (1 - cos**2).sqrt()[..., None] * away
    places = torch.randperm(n, generator=g)[: queries * planted]
    items[places] = near.reshape(-1, dim)
    return items, q


@contextlib.contextmanager
def no_training() -> Iterator[None]:
    """Every FAISS ``train`` and ``add`` raises inside: loading must do neither."""

    def refuse(self: Any, *args: Any) -> None:
        raise RuntimeError(f"{type(self).__name__}: trained or added to at load")

    classes = (faiss.IndexIVFFlat, faiss.IndexIVFPQ, faiss.IndexHNSWFlat, faiss.IndexFlat)
    classes += (faiss.IndexFlatL2, faiss.IndexFlatIP)
    saved = [(c, c.train, c.add) for c in classes]
    for c in classes:
        c.train, c.add = refuse, refuse
    try:
        yield
    finally:
        for c, train, add in saved:
            c.train, c.add = train, add


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def recall(found: torch.Tensor, exact: torch.Tensor) -> float:
    """Mean share of each query's exact top-k found in its top-k."""
    hits = (found[:, :, None] == exact[:, None, :]).any(-1).float()
    return float(hits.mean())


def qps(searcher: Any, queries: torch.Tensor, repeats: int) -> tuple[float, torch.Tensor]:
    """Best queries/s of `repeats` searches of all `queries` (top-K), and the indices found."""
    searcher.search(queries[:8], K)  # warm-up
    best, found = float("inf"), None
    for _ in range(repeats):
        seconds, (found, _) = timed(lambda: searcher.search(queries, K))
        best = min(best, seconds)
    return len(queries) / best, found


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file())


def bench_dim(dim: int, args: argparse.Namespace, workdir: Path) -> list[dict[str, Any]]:
    head = DistanceHead()
    items, queries = planted_vectors(args.n, dim, args.queries, args.planted, seed=dim)
    gallery = Gallery(
        items, [None] * args.n, [f"v{i}" for i in range(args.n)], "euclidean", {"sha256": "0" * 64}
    )
    rows: list[dict[str, Any]] = []
    plain = workdir / f"exact-{dim}"
    save_gallery(gallery, plain)
    load_s, loaded = timed(lambda: load_gallery(plain))
    exact_qps, exact = qps(ExactSearch(loaded.embeddings, head), queries, args.repeats)
    rows.append(
        {"dim": dim, "method": "exact", "setting": "-", "build_s": 0.0,
         "index_mb": 0.0, "gallery_mb": folder_size(plain) / 2**20, "load_s": load_s,
         "whole_load_s": load_s, "qps": exact_qps, "recall": 1.0, "speedup": 1.0}
    )  # fmt: skip
    print(f"dim {dim}: exact {exact_qps:,.1f} queries/s, load {load_s:.2f} s", flush=True)
    del loaded
    specs = {
        "flat": IndexSpec("flat"),
        "ivf-flat": IndexSpec("ivf-flat", nlist=args.nlist),
        "ivf-pq": IndexSpec("ivf-pq", nlist=args.nlist, m=args.m),
        "hnsw": IndexSpec("hnsw", hnsw_m=args.hnsw_m, ef_construction=args.ef_construction),
    }
    for method in args.methods:
        build_s, indexed = timed(lambda m=method: with_index(gallery, head, specs[m]))
        folder = workdir / f"{method}-{dim}"
        save_gallery(indexed, folder)
        del indexed
        gc.collect()
        with no_training():
            whole_s, loaded = timed(lambda f=folder: load_gallery(f))
            del loaded
            gc.collect()
            load_s, loaded = timed(lambda f=folder: load_gallery(f, embeddings=False))
            assert loaded.index.is_trained and loaded.index.ntotal == args.n
            settings: list[dict[str, int]] = [{}]
            if method.startswith("ivf"):
                settings = [{"nprobe": p} for p in args.nprobe]
            elif method == "hnsw":
                settings = [{"ef_search": e} for e in args.ef_search]
            for setting in settings:
                searcher = make_searcher(loaded, head, **setting)
                speed, found = qps(searcher, queries, args.repeats)
                described = searcher.describe()
                shown = ", ".join(f"{k} {v}" for k, v in described.items() if k != "method")
                extra = ""
                if method.startswith("ivf"):
                    extra = f"nlist {loaded.index_record['nlist']}"
                    if method == "ivf-pq":
                        extra += f", m {loaded.index_record['m']}"
                elif method == "hnsw":
                    extra = f"M {loaded.index_record['hnsw_m']}"
                row = {
                    "dim": dim, "method": method,
                    "setting": "; ".join(s for s in (extra, shown) if s) or "-",
                    "build_s": build_s, "index_mb": (folder / INDEX_FILE).stat().st_size / 2**20,
                    "gallery_mb": folder_size(folder) / 2**20, "load_s": load_s,
                    "whole_load_s": whole_s, "qps": speed, "recall": recall(found, exact),
                    "speedup": speed / exact_qps,
                }  # fmt: skip
                rows.append(row)
                print(
                    f"dim {dim}: {method} {row['setting']}: build {build_s:.1f} s, load "
                    f"{load_s:.2f} s, {speed:,.1f} queries/s ({row['speedup']:.1f}x exact), "
                    f"recall@{K} {row['recall']:.3f}",
                    flush=True,
                )
        del loaded
        gc.collect()
        for f in folder.iterdir():
            f.unlink()
        folder.rmdir()
    for f in plain.iterdir():
        f.unlink()
    plain.rmdir()
    return rows


def best_of(rows: list[dict[str, Any]], dim: int) -> dict[str, Any] | None:
    """The fastest approximate row of `dim` at recall@K ≥ TARGET_RECALL."""
    ok = [
        r for r in rows
        if r["dim"] == dim and r["method"] not in ("exact", "flat") and r["recall"] >= TARGET_RECALL
    ]  # fmt: skip
    return max(ok, key=lambda r: r["qps"]) if ok else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="gallery items")
    parser.add_argument("--dims", type=int, nargs="+", default=[64, 512])
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--planted", type=int, default=K, help="near neighbours per query")
    parser.add_argument("--methods", nargs="+", default=["flat", "ivf-flat", "ivf-pq", "hnsw"])
    parser.add_argument("--nlist", type=int, default=None, help="IVF cells (default: about √N)")
    parser.add_argument("--nprobe", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--m", type=int, default=None, help="ivf-pq codes (default: D/8 up to 64)")
    parser.add_argument("--hnsw-m", type=int, default=None)
    parser.add_argument("--ef-construction", type=int, default=None)
    parser.add_argument("--ef-search", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--repeats", type=int, default=3, help="searches timed, best kept")
    parser.add_argument("--dir", type=Path, default=None, help="where the galleries are written")
    parser.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="index-scale-") as tmp:
        for dim in args.dims:
            rows += bench_dim(dim, args, Path(tmp))
    header = ["dim", "method", "setting", "build s", "index MB", "load s", "whole load s",
              "queries/s", f"recall@{K}", "vs exact"]  # fmt: skip
    shown = [
        [r["dim"], r["method"], r["setting"], f"{r['build_s']:.1f}", f"{r['index_mb']:,.0f}",
         f"{r['load_s']:.2f}", f"{r['whole_load_s']:.2f}", f"{r['qps']:,.0f}",
         f"{r['recall']:.3f}", f"{r['speedup']:.1f}x"]
        for r in rows
    ]  # fmt: skip
    verdicts = []
    for dim in args.dims:
        best = best_of(rows, dim)
        if best is None:
            verdicts.append(f"dim {dim}: no approximate setting reached recall@{K} {TARGET_RECALL}")
        else:
            verdicts.append(
                f"dim {dim}: {best['method']} ({best['setting']}) recall@{K} {best['recall']:.3f} "
                f"at {best['speedup']:.1f}x exact's queries/s (target ≥ {TARGET_SPEEDUP:g}x: "
                f"{'met' if best['speedup'] >= TARGET_SPEEDUP else 'not met'})"
            )
    slowest = max(r["load_s"] for r in rows if r["method"] != "exact")
    verdicts.append(
        f"slowest index load {slowest:.2f} s (target ≤ {TARGET_LOAD_S:g} s: "
        f"{'met' if slowest <= TARGET_LOAD_S else 'not met'}), no training at load (checked)"
    )
    print(table(header, shown))
    print("\n".join(verdicts))
    command = (
        f"python bench/index_scale.py --n {args.n} --dims {' '.join(map(str, args.dims))} "
        f"--queries {args.queries}"
    )
    if args.json is not None:
        record = {"rows": rows, "verdicts": verdicts, "n": args.n, "queries": args.queries,
                  "planted": args.planted, "machine": machine(), "load_before": load_before,
                  "faiss": faiss.__version__, "command": command}  # fmt: skip
        args.json.write_text(json.dumps(record, indent=2))
    if not args.no_write:
        body = "\n\n".join(
            [
                f"{args.n:,} random unit vectors per dimension with {args.planted} planted near "
                f"neighbours around each of {args.queries} queries, top-{K}, euclidean head, CPU. "
                "Build: training and adding (`with_index`); load: `load_gallery(embeddings=False)` "
                "as `index search` reads a gallery with an index (gallery.json and index.faiss, "
                "checked; embeddings.pt not read), whole load: `load_gallery` (embeddings.pt too, "
                "checked), both just written (warm page cache) and with every FAISS train/add "
                "refused; exact's load reads the embeddings it searches; queries/s: all queries "
                f"in one search, best of {args.repeats}; recall against exact search's top-{K}.",
                table(header, shown),
                "\n".join(f"- {v}" for v in verdicts),
                f"Machine: {machine()}, faiss {faiss.__version__}; load average before the run "
                f"{load_before:.2f}.",
                f"Reproduce: `{command}`",
            ]
        )
        write_section("Galleries of a million items", body)
        print("wrote bench/RESULTS.md")


if __name__ == "__main__":
    main()
