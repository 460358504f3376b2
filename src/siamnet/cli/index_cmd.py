"""`siamnet index build|add|search`: a gallery of embedded images and nearest-item search."""

from __future__ import annotations

import argparse
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
        "  siamnet index build runs/digits --data digits --split test --out gallery/",
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
    _common(b)
    b.set_defaults(func=run_build)

    a = add_verb(
        actions,
        "add",
        "Embed only the new images of --data and add them to a gallery.",
        "siamnet index add gallery/ --data new_photos/",
    )
    a.add_argument("gallery", metavar="GALLERY", help="a folder made by 'index build'")
    _data_options(a)
    _checkpoint_option(a)
    _common(a)
    a.set_defaults(func=run_add)

    s = add_verb(
        actions,
        "search",
        "The gallery items nearest each query image, by the model's own score.",
        "siamnet index search gallery/ query.png --top-k 5\n"
        "  siamnet index search gallery/ queries/ --method faiss --json",
    )
    s.add_argument("gallery", metavar="GALLERY", help="a folder made by 'index build'")
    s.add_argument("queries", nargs="+", metavar="FILE|DIR", help="query images or folders")
    _checkpoint_option(s)
    s.add_argument("--top-k", type=int, default=5, help="items to return per query")
    s.add_argument(
        "--method",
        choices=["exact", "rerank", "faiss", "faiss-ivf"],
        default="exact",
        help="exact: every item scored by the head, batched; rerank (l1 head): a candidate "
        "pool by L1 distance re-scored by the head, approximate; faiss: FAISS flat index "
        "(exact; the faiss extra); faiss-ivf: FAISS inverted file (approximate, large galleries)",
    )
    s.add_argument("--nprobe", type=int, default=8, help="cells visited per query (faiss-ivf)")
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


def _read_data(args: argparse.Namespace, ckpt: Any) -> Any:
    """Every ``--data`` source read at the checkpoint's channels and size, concatenated."""
    import torch

    from siamnet.gallery import GalleryItems, read_gallery_items

    channels, size = ckpt.spec.in_channels, ckpt.spec.image_size
    parts = [read_gallery_items(d, channels, size, args.invert, args.split) for d in args.data]
    merged = GalleryItems(
        images=torch.cat([p.images for p in parts]),
        labels=[label for p in parts for label in p.labels],
        names=[name for p in parts for name in p.names],
        failures=[f for p in parts for f in p.failures],
    )
    report_skipped(merged.failures)
    return merged


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


def _summary(gallery: Any, added: int, skipped: list[tuple[str, str]]) -> dict[str, Any]:
    labelled = sum(label is not None for label in gallery.labels)
    return {
        "gallery": str(gallery.path),
        "items": len(gallery),
        "added": added,
        "labelled": labelled,
        "dim": gallery.dim,
        "head": gallery.head,
        "checkpoint": gallery.checkpoint.get("path"),
        "skipped": [{"file": f, "error": m} for f, m in skipped],
    }


def _print_summary(args: argparse.Namespace, summary: dict[str, Any]) -> int:
    if args.json:
        print_json(summary)
    else:
        print(
            f"{summary['gallery']}: {summary['items']} items ({summary['added']} added, "
            f"{len(summary['skipped'])} skipped), embeddings of size {summary['dim']}"
        )
    return 1 if summary["skipped"] else 0


def run_build(args: argparse.Namespace) -> int:
    from siamnet.checkpoint import load_checkpoint
    from siamnet.device import resolve_device
    from siamnet.gallery import build_gallery, refuse_existing_gallery
    from siamnet.outpaths import check_output_dir

    out = check_output_dir(args.out, "--out")  # before any work
    refuse_existing_gallery(out, args.overwrite)
    ckpt = load_checkpoint(args.checkpoint, resolve_device(args.device))
    items = _read_data(args, ckpt)
    gallery = build_gallery(
        ckpt,
        items.images,
        items.labels,
        items.names,
        args.out,
        batch_size=args.batch_size,
        overwrite=args.overwrite,
    )
    return _print_summary(args, _summary(gallery, len(gallery), items.failures))


def run_add(args: argparse.Namespace) -> int:
    from siamnet.gallery import add_to_gallery, load_gallery

    gallery = load_gallery(args.gallery)
    ckpt = _gallery_checkpoint(args, gallery)
    items = _read_data(args, ckpt)
    merged = add_to_gallery(
        gallery, ckpt, items.images, items.labels, items.names, batch_size=args.batch_size
    )
    return _print_summary(args, _summary(merged, len(items.names), items.failures))


def run_search(args: argparse.Namespace) -> int:
    from siamnet.cli.common import query_files
    from siamnet.gallery import load_gallery, make_searcher, search_matches
    from siamnet.images import read_images
    from siamnet.infer import threshold_of
    from siamnet.models.embed import embed_images

    given = _search_options(args)
    gallery = load_gallery(args.gallery)
    ckpt = _gallery_checkpoint(args, gallery)
    device = next(ckpt.model.parameters()).device
    channels, size = ckpt.spec.in_channels, ckpt.spec.image_size
    files = query_files(args.queries)
    images, ok, failures = read_images(files, channels, size, args.invert, "reading queries")
    report_skipped(failures)
    has_threshold = given is not None or ckpt.metadata.get("threshold") is not None
    threshold = threshold_of(ckpt, given) if has_threshold else None
    results = []
    if ok:
        options = {"nprobe": args.nprobe} if args.method == "faiss-ivf" else {}
        if not args.method.startswith("faiss"):
            gallery.embeddings = gallery.embeddings.to(device)
        searcher = make_searcher(gallery, ckpt.model.head, args.method, **options)
        queries = embed_images(ckpt.model, images, batch_size=args.batch_size, device=device)
        indices, scores = searcher.search(queries, args.top_k)
        for f, row, row_scores in zip(ok, indices.tolist(), scores.tolist(), strict=True):
            matches = search_matches(gallery, row, row_scores, threshold)
            results.append({"query": str(f), "matches": matches})
    if args.json:
        print_json(
            {
                "gallery": str(gallery.path),
                "method": args.method,
                "threshold": threshold,
                "results": results,
                "skipped": [{"file": str(f), "error": m} for f, m in failures],
            }
        )
    else:
        for r in results:
            print(r["query"])
            for m in r["matches"]:
                label = "" if m["label"] is None else f"\t{m['label']}"
                same = "\tsame" if m["same"] else ""
                score = "n/a" if m["score"] is None else f"{m['score']:.4f}"
                print(f"  {m['rank']}.\t{score}\t{m['file']}{label}{same}")
    return 1 if failures else 0


def _search_options(args: argparse.Namespace) -> float | None:
    """Check ``--threshold``, ``--top-k`` and ``--nprobe`` before any work; the threshold
    given (None: the checkpoint's)."""
    from siamnet.gallery import check_search_options
    from siamnet.infer import finite_number

    check_search_options(args.top_k, args.nprobe)
    return finite_number(args.threshold, "--threshold")
