"""Pair sampling: siamnet's tensor sampler against the blog post's per-pair loop, in one run.

Data: 60,000 generated uint8 28×28 images, 10 classes (MNIST-sized). Both sides draw balanced
batches of 100 pairs. The post's `get_batch` fills float64 arrays one pair at a time from
per-class arrays with `rng.randint` (`rng = np.random`); siamnet draws index tensors and copies
uint8 images with `index_select`. Also compares the ways of copying uint8 images by index.

    python bench/pair_sampling.py
"""

from __future__ import annotations

import argparse
import itertools
import os
import time
from collections.abc import Callable

import numpy as np
import torch

from siamnet.data.batch_pairs import BatchPairSampler
from siamnet.data.labeled import LabeledImages
from siamnet.data.pairs import PairSampler, sample_pairs

from results import machine, table, write_section

N, CLASSES, SIDE, BATCH = 60000, 10, 28, 100


def make_data() -> LabeledImages:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (N, 1, SIDE, SIDE), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, CLASSES, (N,), generator=g)
    return LabeledImages(images, labels, [str(i) for i in range(CLASSES)], source="generated")


class PostLoader:
    """The blog post's `MNISTOneShotDataLoader.get_batch`, kept as written (numpy labels in
    place of the pandas Series it reads from the CSV)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        self.labels = labels
        mnist = images.reshape((len(labels), 28, 28))
        classes = np.unique(self.labels)
        self.mnist = [mnist[self.labels == c] for c in classes]
        self.num_classes = len(classes)

    def get_batch(self, labels, batch_size):
        rng = np.random
        n_classes = len(np.unique(labels))
        w, h = 28, 28
        categories = np.random.choice(n_classes, size=(batch_size,), replace=True)
        pairs = [np.zeros((batch_size, h, w, 1)) for i in range(2)]
        targets = np.zeros((batch_size,))
        targets[batch_size // 2 :] = 1
        for i in range(batch_size):
            category = categories[i]
            idx_1 = rng.randint(0, len(self.mnist[category]))
            pairs[0][i, :, :, :] = self.mnist[category][idx_1].reshape(w, h, 1)
            if i >= batch_size // 2:
                category_2 = category
            else:
                category_2 = (category + rng.randint(1, n_classes)) % n_classes
            idx_2 = rng.randint(0, len(self.mnist[category_2]))
            pairs[1][i, :, :, :] = self.mnist[category_2][idx_2].reshape(w, h, 1)
        return pairs, targets


def best_seconds(
    functions: dict[str, Callable[[], object]], min_time: float, rounds: int
) -> dict[str, float]:
    """Seconds per call of each function: the best of `rounds` timed runs of >= `min_time` s.

    The rounds interleave the functions, so that other work on the machine falls on all of
    them alike, and the best run is kept, since such work only ever adds time.
    """
    calls = {}
    for name, fn in functions.items():
        fn()
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < min_time / 4:
            fn()
            count += 1
        calls[name] = max(1, count * 4)
    best = dict.fromkeys(functions, float("inf"))
    for _ in range(rounds):
        for name, fn in functions.items():
            start = time.perf_counter()
            for _ in range(calls[name]):
                fn()
            best[name] = min(best[name], (time.perf_counter() - start) / calls[name])
    return best


def indexing_methods(images: torch.Tensor) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """Ways of copying uint8 images ``[N, C, H, W]`` at an index ``[M]``."""
    flat = images.view(len(images), -1)
    row = flat.shape[1]
    columns = torch.arange(row)
    shape = images.shape[1:]
    return {
        "`images.index_select(0, i)`": lambda i: images.index_select(0, i),
        "`images[i]` (advanced indexing)": lambda i: images[i],
        "`torch.take` on flat offsets": lambda i: torch.take(flat, i[:, None] * row + columns).view(
            -1, *shape
        ),
        "`torch.gather` on a flattened view": lambda i: torch.gather(
            flat, 0, i[:, None].expand(-1, row)
        ).view(-1, *shape),
    }


def compare_indexing(
    images: torch.Tensor, min_time: float, rounds: int
) -> tuple[list[list[object]], float]:
    """Each method on fresh random indices every call, cycling through enough index tensors to
    touch the whole data set (as sampling does), so the cache does not flatter any method.
    Returns the table rows and the best seconds to copy one batch (200 images)."""
    g = torch.Generator().manual_seed(1)
    rows, batch_copy = [], float("inf")
    for count in (2 * BATCH, 200 * BATCH):
        sets = max(8, 4 * len(images) // count)
        indices = [torch.randint(0, len(images), (count,), generator=g) for _ in range(sets)]
        functions = {}
        for name, method in indexing_methods(images).items():
            assert torch.equal(method(indices[0]), images[indices[0]]), name
            functions[name] = lambda m=method, it=itertools.cycle(indices): m(next(it))
        timings = best_seconds(functions, min_time, rounds)
        best = min(timings.values())
        if count == 2 * BATCH:
            batch_copy = best
        for name, sec in timings.items():
            rows.append(
                [count, name, f"{sec * 1e6:,.1f}", f"{count / sec / 1e6:.2f}", f"{sec / best:.1f}×"]
            )
    return rows, batch_copy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--min-time", type=float, default=0.5, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=5, help="timed runs per figure")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1, as the post's numpy loop; see RESULTS.md)",
    )
    parser.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    load_before = os.getloadavg()[0]
    data = make_data()
    post = PostLoader(data.images.numpy().astype(np.int64), data.labels.numpy())
    np.random.seed(0)
    g = torch.Generator().manual_seed(0)
    sampler = PairSampler(data.labels)
    many = 100  # batches drawn at once
    in_batch = BatchPairSampler(data.labels, BATCH, 10)  # 10 classes × 10 images, every pair

    stream = sampler.image_batches(data.images, BATCH, g, chunk=many)

    functions = {
        "post": lambda: post.get_batch(post.labels, BATCH),
        "one": lambda: sample_pairs(data, BATCH, g),
        "stream": lambda: next(stream),
        "many": lambda: sampler.sample(data.images, BATCH, g, num_batches=many),
        "indices": lambda: sampler.sample_indices(BATCH, g, num_batches=many),
        "in_batch": lambda: data.images.index_select(0, in_batch.sample(g)["index"]),
    }
    timings = best_seconds(functions, args.min_time, args.rounds)
    timings["many"] /= many
    timings["indices"] /= many
    rate = {k: BATCH / v for k, v in timings.items()}
    rate["in_batch"] = in_batch.pairs_per_batch / timings["in_batch"]
    names = {
        "post": "post's `get_batch` loop (float64, one pair at a time)",
        "one": "`sample_pairs` (uint8 images), one batch per call",
        "stream": f"`PairSampler.image_batches` (uint8 images), one batch per call, indices "
        f"drawn {many} batches at a time",
        "many": f"`PairSampler.sample` (uint8 images), {many} batches per call",
        "indices": f"`PairSampler.sample_indices` only, {many} batches per call",
        "in_batch": f"`BatchPairSampler.sample` (`--pairs batch`, as training draws it): "
        f"{in_batch.batch_size} uint8 images, 10 classes × 10, gathered, and the positions of "
        f"their {in_batch.pairs_per_batch:,} pairs, one batch per call",
    }
    rows = [
        [names[k], f"{timings[k] * 1e3:.3f}", f"{rate[k]:,.0f}", f"{rate[k] / rate['post']:.1f}×"]
        for k in names
    ]
    index_rows, batch_copy = compare_indexing(data.images, args.min_time, args.rounds)
    load = f"1-minute load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after"

    body = "\n\n".join(
        [
            f"Balanced batches of {BATCH} pairs from {N:,} generated uint8 {SIDE}×{SIDE} images, "
            f"{CLASSES} classes, measured in one run on {machine()} ({os.cpu_count()} CPU cores). "
            "The post's loop returns float64 images; siamnet returns uint8 (float conversion "
            "happens on the training device). Both sides run on one thread (`--threads 1`): the "
            "post's loop is single-threaded, and on a shared machine a copy that torch splits "
            "over two threads can stall for milliseconds when a core is busy with other work. "
            "Each figure is the best of "
            f"{args.rounds} interleaved runs of at least {args.min_time:g} s ({load}).",
            table(["sampler", "ms per batch", "pairs/s", "vs. post"], rows),
            f"Target: at least 100× the post's loop at batch size {BATCH}. "
            f"Measured: {rate['one'] / rate['post']:.0f}× drawing one batch per call, "
            f"{rate['stream'] / rate['post']:.0f}× taking one batch per call from indices drawn "
            f"{many} batches at a time, {rate['many'] / rate['post']:.0f}× drawing {many} "
            f"batches of images per call, {rate['indices'] / rate['post']:.0f}× for the indices "
            f"alone; {rate['in_batch'] / rate['post']:,.0f}× per pair fed to the model with "
            f"pairs inside P×K batches (`--pairs batch`, `--preset fast`): one call per training "
            f"step, {in_batch.batch_size} images gathered for {in_batch.pairs_per_batch:,} pairs "
            "(the ms column is per call). Copying the 200 images of one batch by itself takes "
            f"{batch_copy * 1e6:.0f} µs here (first row below), which caps the ratio with images "
            f"at about {timings['post'] / batch_copy:.0f}× on this machine.",
            "Copying uint8 images by index (`[60000, 1, 28, 28]`; one batch of pairs is 200 "
            "images). `sample_pairs` uses `index_select`.",
            table(
                ["images", "method", "µs per call", "M images/s", "time vs. fastest"], index_rows
            ),
            "Reproduce: `python bench/pair_sampling.py`",
        ]
    )
    print(body)
    if not args.no_write:
        write_section("Pair sampling", body)


if __name__ == "__main__":
    main()
