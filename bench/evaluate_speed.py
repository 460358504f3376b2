"""One-shot evaluation speed: siamnet's evaluator (every image embedded once, episodes scored
in batches from the embeddings) against the naive way, in one run on the same episodes.

The naive way is what the blog post's model offers: to classify a query, score it against
every support image with a separate forward pass of the pair network on the two images, then
take the class with the highest (mean) score. It is timed on the first episodes of the same
seeded batch and extrapolated; its answers are checked against the evaluator's on those
episodes.

Random weights and random 28×28 images (speed does not depend on training): 400 classes of 20
images, as in an Omniglot-sized evaluation set.

    python bench/evaluate_speed.py            # writes "## One-shot evaluation speed"
    python bench/evaluate_speed.py --quick    # fewer episodes, no RESULTS.md
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from siamnet.data.episodes import episodes_for_evaluation
from siamnet.evaluate import embed_images, episode_predictions, few_shot_accuracy
from siamnet.models.siamese import ModelSpec, SiameseNet, build_model

from results import machine, table, write_section

CLASSES, PER_CLASS, SIZE = 400, 20, (28, 28)
MODELS = [
    ("seed-cnn", "bce"),
    ("seed-cnn", "contrastive"),
    ("conv4", "proto"),
    ("conv4-map", "proto"),  # the default backbone
]
SETTINGS = [(20, 1), (5, 5)]  # (ways, shots)
HEADER = ["model / head", "episodes", "method", "episodes/s", "s for these episodes", "vs naive"]


@torch.no_grad()
def naive_predictions(
    model: SiameseNet,
    images: torch.Tensor,
    support: torch.Tensor,
    support_labels: torch.Tensor,
    query: torch.Tensor,
    ways: int,
) -> torch.Tensor:
    """Predicted class ``[E, N·Q]``: every (query, support image) pair through the network,
    one forward pass each; a class's score is the mean over its K support images."""
    out = torch.empty(query.shape, dtype=torch.int64)
    for e in range(query.shape[0]):
        for j, qi in enumerate(query[e].tolist()):
            scores = torch.stack(
                [
                    model.score(images[qi : qi + 1], images[si : si + 1])[0]
                    for si in support[e].tolist()
                ]
            )
            per_class = torch.zeros(ways).index_add_(0, support_labels[e], scores)
            out[e, j] = int(per_class.argmax())
    return out


def bench(
    name: str,
    loss: str,
    ways: int,
    shots: int,
    episodes: int,
    naive_episodes: int,
    images: torch.Tensor,
    labels: torch.Tensor,
) -> list[list[object]]:
    torch.manual_seed(0)
    model = build_model(ModelSpec(model=name, loss=loss, image_size=SIZE)).eval()
    start = time.perf_counter()
    emb = embed_images(model, images)
    embed_s = time.perf_counter() - start
    start = time.perf_counter()
    few_shot_accuracy(model, emb, labels, ways=ways, shots=shots, episodes=episodes, seed=1)
    score_s = time.perf_counter() - start
    ep = episodes_for_evaluation(labels, ways, shots, 1, episodes, seed=1)
    fast = episode_predictions(model, emb, ep, ways)[:naive_episodes]
    start = time.perf_counter()
    slow = naive_predictions(
        model,
        images,
        ep.support[:naive_episodes],
        ep.support_labels[:naive_episodes],
        ep.query[:naive_episodes],
        ways,
    )
    naive_s = time.perf_counter() - start
    agree = int((fast == slow).all(dim=1).sum())
    naive_rate = naive_episodes / naive_s
    total_rate = episodes / (embed_s + score_s)
    label = f"{name} / {model.head.kind}"
    setting = f"{episodes:,} × {ways}-way {shots}-shot"
    return [
        [
            label,
            setting,
            f"siamnet: embed {len(images):,} images once + score in batches",
            f"{total_rate:,.0f}",
            f"{embed_s + score_s:.2f}",
            f"{total_rate / naive_rate:,.0f}x",
        ],
        [
            label,
            setting,
            "siamnet: scoring only (embeddings given)",
            f"{episodes / score_s:,.0f}",
            f"{score_s:.3f}",
            f"{episodes / score_s / naive_rate:,.0f}x",
        ],
        [
            label,
            setting,
            f"naive: a network pass per (query, support) pair (timed on "
            f"{naive_episodes}, extrapolated; same answers on {agree}/{naive_episodes})",
            f"{naive_rate:,.1f}",
            f"{episodes / naive_rate:,.0f} (extrapolated)",
            "1x",
        ],
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer episodes; no RESULTS.md")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads for both sides (default 1: steadier on a shared machine)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    episodes, naive_episodes = (200, 5) if args.quick else (1000, 20)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (CLASSES * PER_CLASS, 1, *SIZE), dtype=torch.uint8, generator=g)
    labels = torch.arange(CLASSES).repeat_interleave(PER_CLASS)
    load = os.getloadavg()[0]
    rows = []
    for name, loss in MODELS:
        for ways, shots in SETTINGS:
            new = bench(name, loss, ways, shots, episodes, naive_episodes, images, labels)
            print(table(HEADER, new), flush=True)
            rows += new
    if args.quick:
        return
    body = "\n\n".join(
        [
            f"N-way K-shot episodes (1 query per class) from {CLASSES} classes × {PER_CLASS} "
            f"random "
            f"{SIZE[0]}×{SIZE[1]} images, random weights, CPU ({machine()}; load average "
            f'{load:.1f} at the start). Episodes per second; "vs naive" is the ratio to the naive '
            "way on the same episodes, measured in the same run.",
            table(HEADER, rows),
            "siamnet's evaluator (`few_shot_accuracy`) embeds each image of the evaluation set "
            "once and scores all episodes from the embeddings with batched head operations; the "
            "first row counts the embedding time too (it is paid once for any number of "
            "episodes), the second only the scoring. The naive way scores every (query, support "
            "image) pair with a forward pass of the pair network on the two images, as the blog "
            "post's model is used; it gives the same answers.",
            "Reproduce: `python bench/evaluate_speed.py`",
        ]
    )
    write_section("One-shot evaluation speed", body)
    print("wrote bench/RESULTS.md")


if __name__ == "__main__":
    main()
