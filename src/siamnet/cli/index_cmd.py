"""`siamnet index build|add|search`: a gallery of embedded images and nearest-item search."""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path
from typing import Any

from siamnet.cli.common import (
    CHECKPOINT_HELP,
    add_image_options,
    add_quiet,
    add_verb,
    print_json,
    report_skipped,
)
from siamnet.presets import GALLERY_LOCK_WAIT_S as LOCK_WAIT_S
from siamnet.presets import INDEX_DEFAULTS, INDEX_METHODS, SEARCH_METHODS


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_verb(
        subparsers,
        "index",
        "Embed images once into a gallery folder, add to it, and search it.",
        "siamnet index build runs/digits --data photos/ --out gallery/\n"
        "  siamnet index add gallery/ --data more_photos/\n"
        "  siamnet index search gallery/ query.png --top-k 5",
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    b = add_verb(
        actions,
        "build",
        "Embed every image of --data into a new gallery folder.",
        "siamnet index build runs/digits --data photos/ --out gallery/\n"
        "  siamnet index build runs/digits --data digits --split test --out gallery/\n"
        "  siamnet index build runs/digits --data photos/ --out gallery/ --method ivf-pq "
        "--nlist 1024 --m 16\n"
        "  siamnet index build runs/digits --data photos/ --out gallery/ --method hnsw "
        "--hnsw-m 32 --ef-search 64",
    )
    b.add_argument("checkpoint", metavar="CKPT", help=CHECKPOINT_HELP)
    _data_options(b)
    b.add_argument("--out", required=True, metavar="DIR", help="the gallery folder to write")
    b.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a gallery already there (as a whole: the new one is written beside it, "
        "then swapped in)",
    )
    _index_options(b)
    _lock_option(b)
    _common(b)
    b.set_defaults(func=run_build)

    a = add_verb(
        actions,
        "add",
        "Embed only the new images of --data and add them to a gallery (and to its index, "
        "never retrained); items it already holds (the same file name, or the same pixels "
        "with the same label) are skipped and counted.",
        "siamnet index add gallery/ --data new_photos/",
    )
    a.add_argument("gallery", metavar="GALLERY", help="a folder made by 'index build'")
    _data_options(a)
    _checkpoint_option(a)
    _lock_option(a)
    _common(a)
    a.set_defaults(func=run_add)

    s = add_verb(
        actions,
        "search",
        "The gallery items nearest each query image, by the model's own score.",
        "siamnet index search gallery/ query.png --top-k 5\n"
        "  siamnet index search gallery/ queries/ --exact --json   # compare with its index\n"
        "  siamnet index search gallery/ queries/ --method faiss --json",
    )
    s.add_argument("gallery", metavar="GALLERY", help="a folder made by 'index build'")
    s.add_argument("queries", nargs="+", metavar="FILE|DIR", help="query images or folders")
    _checkpoint_option(s)
    s.add_argument("--top-k", type=int, default=5, help="items to return per query")
    s.add_argument(
        "--method",
        choices=[*SEARCH_METHODS, *INDEX_METHODS[1:]],
        default=None,
        help="default: the gallery's own (its saved index, as built, or exact search); exact: "
        "every item scored by the head, batched; rerank (l1 head): a candidate pool by L1 "
        "distance re-scored by the head, approximate; faiss / faiss-ivf: a FAISS flat "
        "(exact) or inverted-file (approximate) index made now (the faiss extra)",
    )
    s.add_argument(
        "--exact",
        action="store_true",
        help="exact search whatever the gallery's index, to compare with its approximate one",
    )
    s.add_argument(
        "--nprobe",
        type=int,
        default=None,
        help="cells visited per query by an inverted-file index (default: the gallery's, "
        f"else {INDEX_DEFAULTS['nprobe']})",
    )
    s.add_argument(
        "--ef-search",
        type=int,
        default=None,
        help="candidates kept per query by an hnsw index (default: the gallery's)",
    )
    s.add_argument(
        "--threshold",
        type=float,
        help="mark matches scoring at least this as 'same' (default: the checkpoint's)",
    )
    _common(s)
    s.set_defaults(func=run_search)


def _data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data",
        required=True,
        action="append",
        metavar="SPEC|DIR|FILE",
        help="a folder of images (read recursively; a sub-folder path is the label), an image "
        "file, or a data SPEC (digits, mnist, a .csv or .npz file); may be repeated",
    )
    p.add_argument("--split", help="only this split of a data SPEC (default: all splits)")


def _index_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--method",
        choices=INDEX_METHODS,
        default="exact",
        help="how the gallery is searched, saved with it and never retrained: exact (no "
        "index: every item scored by the head), flat (FAISS, exact), ivf-flat / ivf-pq "
        "(inverted file of --nlist cells, vectors kept whole / compressed to --m codes; "
        "approximate), hnsw (graph, approximate); FAISS methods need the faiss extra",
    )
    whole = {"type": int, "default": None}
    p.add_argument("--nlist", **whole, help="ivf-*: cells (default: about √N)")
    p.add_argument(
        "--nprobe",
        **whole,
        help=f"ivf-*: cells visited per query by default (default {INDEX_DEFAULTS['nprobe']})",
    )
    p.add_argument(
        "--train-size",
        **whole,
        help=f"ivf-*: items the cells are learnt from (default {INDEX_DEFAULTS['train_size']})",
    )
    p.add_argument("--m", **whole, help="ivf-pq: codes per vector, a divisor of the embedding size")
    p.add_argument(
        "--nbits", **whole, help=f"ivf-pq: bits per code (default {INDEX_DEFAULTS['nbits']})"
    )
    p.add_argument(
        "--hnsw-m",
        **whole,
        help=f"hnsw: neighbours per node (default {INDEX_DEFAULTS['hnsw_m']})",
    )
    p.add_argument(
        "--ef-construction",
        **whole,
        help=f"hnsw: candidates kept while building (default {INDEX_DEFAULTS['ef_construction']})",
    )
    p.add_argument(
        "--ef-search",
        **whole,
        help=f"hnsw: candidates kept per query by default (default {INDEX_DEFAULTS['ef_search']})",
    )


def _index_spec(args: argparse.Namespace) -> Any:
    """The `IndexSpec` of ``index build``'s options, checked (before any work)."""
    from siamnet.gallery import IndexSpec

    names = ("nlist", "nprobe", "train_size", "m", "nbits", "hnsw_m", "ef_construction")
    options = {name: getattr(args, name) for name in (*names, "ef_search")}
    return IndexSpec(method=args.method, **options).check()


def _lock_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--lock-wait",
        type=float,
        default=LOCK_WAIT_S,
        metavar="SECONDS",
        help="how long to wait for another process writing the same gallery before giving up "
        "(writers of one gallery take turns)",
    )


def _check_lock_wait(args: argparse.Namespace) -> None:
    import math

    from siamnet.errors import ArgumentError

    if not (math.isfinite(args.lock_wait) and args.lock_wait >= 0):
        raise ArgumentError(f"--lock-wait {args.lock_wait}: expected 0 seconds or more")


def _checkpoint_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--checkpoint",
        metavar="CKPT",
        help="the checkpoint that made the gallery (default: the path recorded in it); "
        "any other is refused",
    )


def _common(p: argparse.ArgumentParser) -> None:
    add_image_options(p)
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="images embedded at a time (default: by image size on a CPU, 512 on a GPU)",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    add_quiet(p)


def _data_chunks(args: argparse.Namespace, ckpt: Any) -> Any:
    """The items of every ``--data`` source, a chunk at a time, at the checkpoint's channels
    and size (each source is listed and checked now, read when the chunks are)."""
    from siamnet.gallery import iter_gallery_items

    channels, size, resize = ckpt.spec.in_channels, ckpt.spec.image_size, ckpt.spec.resize
    sources = [
        iter_gallery_items(d, channels, size, args.invert, args.split, resize=resize)
        for d in args.data
    ]
    return itertools.chain.from_iterable(sources)


def _gallery_checkpoint(args: argparse.Namespace, gallery: Any) -> Any:
    from siamnet.checkpoint import load_checkpoint
    from siamnet.device import resolve_device
    from siamnet.errors import CheckpointError

    path = args.checkpoint or gallery.checkpoint_path
    if path is None:
        raise CheckpointError(f"{gallery.path}: no checkpoint recorded; pass --checkpoint")
    if args.checkpoint is None and not Path(path).exists():
        raise CheckpointError(
            f"{gallery.path}: made with {path}, which is no longer there; pass --checkpoint"
        )
    ckpt = load_checkpoint(path, resolve_device(args.device))
    gallery.check_model(ckpt)
    return ckpt


def _summary(gallery: Any, embedded: Any) -> dict[str, Any]:
    labelled = sum(label is not None for label in gallery.labels)
    return {
        "gallery": str(gallery.path),
        "items": len(gallery),
        "added": len(embedded),
        "already_held": embedded.already_held,
        "labelled": labelled,
        "dim": gallery.dim,
        "head": gallery.head,
        "method": gallery.method,
        "index": gallery.index_record,
        "checkpoint": gallery.checkpoint.get("path"),
        "skipped": [{"file": f, "error": m} for f, m in embedded.failures],
    }


def _print_summary(args: argparse.Namespace, summary: dict[str, Any]) -> int:
    if args.json:
        print_json(summary)
    else:
        held = summary["already_held"]
        held_text = f"{held} already in the gallery, " if held else ""
        print(
            f"{summary['gallery']}: {summary['items']} items ({summary['added']} added, "
            f"{held_text}{len(summary['skipped'])} skipped), embeddings of size "
            f"{summary['dim']}, {summary['method']} search"
        )
    return 1 if summary["skipped"] else 0


def run_build(args: argparse.Namespace) -> int:
    from siamnet.checkpoint import load_checkpoint
    from siamnet.device import resolve_device
    from siamnet.gallery import build_gallery_from, index_dim_and_metric, refuse_existing_gallery
    from siamnet.outpaths import check_output_dir

    out = check_output_dir(args.out, "--out")  # before any work
    spec = _index_spec(args)
    _check_lock_wait(args)
    refuse_existing_gallery(out, args.overwrite)
    ckpt = load_checkpoint(args.checkpoint, resolve_device(args.device))
    if spec.method != "exact":
        spec.check_for(
            *index_dim_and_metric(ckpt.model, ckpt.spec.in_channels, ckpt.spec.image_size)
        )
    gallery, embedded = build_gallery_from(
        ckpt,
        _data_chunks(args, ckpt),
        args.out,
        batch_size=args.batch_size,
        overwrite=args.overwrite,
        index=spec,
        lock_wait_s=args.lock_wait,
    )
    report_skipped(embedded.failures)
    return _print_summary(args, _summary(gallery, embedded))


def run_add(args: argparse.Namespace) -> int:
    from siamnet.gallery import add_items_to_gallery, load_gallery

    _check_lock_wait(args)
    gallery = load_gallery(args.gallery)
    ckpt = _gallery_checkpoint(args, gallery)
    merged, embedded = add_items_to_gallery(
        gallery,
        ckpt,
        _data_chunks(args, ckpt),
        batch_size=args.batch_size,
        lock_wait_s=args.lock_wait,
    )
    report_skipped(embedded.failures)
    return _print_summary(args, _summary(merged, embedded))


def run_search(args: argparse.Namespace) -> int:
    from siamnet.cli.common import query_files
    from siamnet.gallery import load_gallery, make_searcher, search_matches
    from siamnet.images import read_images
    from siamnet.infer import threshold_of
    from siamnet.models.embed import embed_images

    given = _search_options(args)
    # searching by the gallery's own index alone needs no embeddings.pt
    gallery = load_gallery(args.gallery, embeddings=args.exact or args.method is not None)
    _check_search_settings(args, gallery)
    ckpt = _gallery_checkpoint(args, gallery)
    device = next(ckpt.model.parameters()).device
    channels, size = ckpt.spec.in_channels, ckpt.spec.image_size
    files = query_files(args.queries)
    images, ok, failures = read_images(
        files, channels, size, args.invert, "reading queries", resize=ckpt.spec.resize
    )
    report_skipped(failures)
    has_threshold = given is not None or ckpt.metadata.get("threshold") is not None
    threshold = threshold_of(ckpt, given) if has_threshold else None
    results = []
    method = "exact" if args.exact else args.method
    searcher = None
    if ok:
        options: dict[str, Any] = {}
        if method == "faiss-ivf":
            options["nprobe"] = args.nprobe or INDEX_DEFAULTS["nprobe"]
        elif method is None or method == gallery.method:
            options = {"nprobe": args.nprobe, "ef_search": args.ef_search}
            options = options if gallery.index is not None else {}
        if method in ("exact", "rerank") or (method is None and gallery.index is None):
            gallery.embeddings = gallery.embeddings.to(device)
        searcher = make_searcher(gallery, ckpt.model.head, method, **options)
        queries = embed_images(ckpt.model, images, batch_size=args.batch_size, device=device)
        indices, scores = searcher.search(queries, args.top_k)
        for f, row, row_scores in zip(ok, indices.tolist(), scores.tolist(), strict=True):
            matches = search_matches(gallery, row, row_scores, threshold)
            results.append({"query": str(f), "matches": matches})
    how = searcher.describe() if searcher is not None else {"method": method or gallery.method}
    if args.json:
        print_json(
            {
                "gallery": str(gallery.path),
                **how,
                "threshold": threshold,
                "results": results,
                "skipped": [{"file": str(f), "error": m} for f, m in failures],
            }
        )
    else:
        if len(how) > 1:  # an approximate search says so, with its setting
            settings = ", ".join(f"{k} {v}" for k, v in how.items() if k != "method")
            print(f"# {how['method']} search ({settings}); --exact to compare")
        for r in results:
            print(r["query"])
            for m in r["matches"]:
                label = "" if m["label"] is None else f"\t{m['label']}"
                same = "\tsame" if m["same"] else ""
                score = "n/a" if m["score"] is None else f"{m['score']:.4f}"
                print(f"  {m['rank']}.\t{score}\t{m['file']}{label}{same}")
    return 1 if failures else 0


def _check_search_settings(args: argparse.Namespace, gallery: Any) -> None:
    """``--nprobe`` only for an inverted-file search, ``--ef-search`` only for an hnsw one
    (the method given, else the gallery's own)."""
    from siamnet.errors import ArgumentError

    method = "exact" if args.exact else args.method or gallery.method
    if args.nprobe is not None and method not in ("ivf-flat", "ivf-pq", "faiss-ivf"):
        raise ArgumentError(
            f"--nprobe {args.nprobe}: applies to an inverted-file search (ivf-flat, ivf-pq, "
            f"faiss-ivf); this one is {method}"
        )
    if args.ef_search is not None and method != "hnsw":
        raise ArgumentError(
            f"--ef-search {args.ef_search}: applies to an hnsw search; this one is {method}"
        )


def _search_options(args: argparse.Namespace) -> float | None:
    """Check ``--threshold``, ``--top-k``, ``--nprobe``, ``--ef-search`` and ``--exact``
    before any work; the threshold given (None: the checkpoint's)."""
    from siamnet.errors import ArgumentError
    from siamnet.gallery import check_search_options
    from siamnet.infer import finite_number

    if args.exact and args.method not in (None, "exact"):
        raise ArgumentError(f"--exact and --method {args.method}: give one of them")
    check_search_options(
        args.top_k,
        1 if args.nprobe is None else args.nprobe,
        1 if args.ef_search is None else args.ef_search,
    )
    return finite_number(args.threshold, "--threshold")
