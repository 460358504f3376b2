"""Classify latency: one query against a 1,000-class one-shot support set that is already
embedded, against scoring the query with the network pair by pair, in one run.

For each model (the blog post's CNN with the ``l1`` and the ``euclidean`` head, and Koch et
al.'s network with 4096-dimensional embeddings), random weights (latency does not depend on
training) and random images:

- `siamnet.infer.classify` given the query embedding (support embedded once, beforehand);
- `siamnet.infer.classify` given the query image (embedding it is part of the latency);
- the baseline: the query against each of the 1,000 support images through the whole network,
  ``model.score(query, support_image)`` one pair at a time, as a per-pair loop does it.

    python bench/classify_latency.py            # writes "## Classify latency" in RESULTS.md
    python bench/classify_latency.py --quick    # fewer repeats, no RESULTS.md
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch

from siamnet.infer import build_support, classify
from siamnet.models.siamese import ModelSpec, build_model

from results import machine, table, write_section

CLASSES = 1000
LOOP_REPEATS = 3
MODELS = [
    ("seed-cnn", "bce", (28, 28)),
    ("seed-cnn", "contrastive", (28, 28)),
    ("koch", "bce", (105, 105)),
]


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


@torch.no_grad()
def bench_model(name: str, loss: str, size: tuple[int, int], repeats: int, loop_pairs: int):
    torch.manual_seed(0)
    model = build_model(ModelSpec(model=name, loss=loss, image_size=size)).eval()
    g = torch.Generator().manual_seed(1)
    support_images = torch.randint(0, 256, (CLASSES, 1, *size), dtype=torch.uint8, generator=g)
    query = torch.randint(0, 256, (1, 1, *size), dtype=torch.uint8, generator=g)
    build_start = time.perf_counter()
    support = build_support(
        model, support_images, torch.arange(CLASSES), list(map(str, range(CLASSES)))
    )
    build_s = time.perf_counter() - build_start
    query_embedding = model.embed(query)
    from_embedding = median_ms(lambda: classify(model, support, query_embedding), repeats)
    from_image = median_ms(lambda: classify(model, support, query), repeats)

    def pair_loop() -> int:
        scores = torch.stack(
            [model.score(query, support_images[i : i + 1])[0] for i in range(loop_pairs)]
        )
        return int(scores.argmax())

    loop_ms = median_ms(pair_loop, LOOP_REPEATS) * CLASSES / loop_pairs
    dim = support.embeddings.shape[1]
    extrapolated = "" if loop_pairs == CLASSES else f" (timed on {loop_pairs}, extrapolated)"
    return [
        [
            f"{name} / {model.head.kind}",
            dim,
            "classify, query embedding given",
            f"{from_embedding:.2f}",
            f"{loop_ms / from_embedding:,.0f}x",
        ],
        [
            f"{name} / {model.head.kind}",
            dim,
            "classify, query image (embedded too)",
            f"{from_image:.2f}",
            f"{loop_ms / from_image:,.0f}x",
        ],
        [
            f"{name} / {model.head.kind}",
            dim,
            f"per-pair loop through the network{extrapolated}",
            f"{loop_ms:,.1f}",
            "1x",
        ],
    ], build_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats; no RESULTS.md")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: one query is too little work to split, and a split "
        "stalls whenever another process holds a core)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    repeats = 20 if args.quick else 200
    rows, builds = [], []
    for name, loss, size in MODELS:
        loop_pairs = CLASSES if name != "koch" else 100
        new, build_s = bench_model(name, loss, size, repeats, loop_pairs)
        print(table(HEADER, new), flush=True)
        rows += new
        builds.append(f"{new[0][0]}: {build_s:.2f} s")
    if args.quick:
        return
    body = "\n\n".join(
        [
            f"One query against a {CLASSES:,}-class one-shot support set, CPU ({machine()}; "
            f"load average {load:.1f} at the start). "
            f"Median latency over {repeats} calls (the per-pair loop: {LOOP_REPEATS}); "
            "\"speed-up\" is the loop's latency over siamnet's.",
            table(HEADER, rows),
            "The support set is embedded once beforehand (`build_support`, "
            + ", ".join(builds)
            + " for the 1,000 images); classify then scores the query against all 1,000 "
            "embeddings with one batched head operation. The per-pair loop embeds both images "
            "of every pair again, 1,000 network passes per query. Both run on "
            f"{args.threads} torch thread(s) (`--threads`).",
        ]
    )
    write_section("Classify latency", body)
    print("wrote bench/RESULTS.md")


HEADER = ["model / head", "dim", "method", "latency ms", "speed-up"]

if __name__ == "__main__":
    main()
