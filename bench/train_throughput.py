"""Training throughput: the full step (sampling, augmentation, forward, backward, optimizer)
against the model-only step on pre-made tensors, in one run.

The data path is everything the full step does beyond the model-only step; the target is that
it costs under 10% of the step. Data: 60,000 generated uint8 28×28 images, 10 classes.

The full step is also timed with the model in the contiguous (NCHW) layout, against the
channels-last layout that training uses on a CPU by default (``--memory-format``).

    python bench/train_throughput.py
"""

from __future__ import annotations

import argparse
import time

import torch

from siamnet.data.augment import AffineRanges, random_affine
from siamnet.data.labeled import LabeledImages
from siamnet.models.siamese import ModelSpec, build_model
from siamnet.train import (
    BatchMaker,
    TrainConfig,
    build_optimizer,
    compute_loss,
    use_channels_last,
)

from results import machine, table, write_section


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


def measure(
    model_name: str,
    loss: str,
    augment: str,
    batch: int,
    steps: int,
    data: LabeledImages,
    rounds: int = 5,
):
    cfg = TrainConfig(
        model=model_name,
        loss=loss,
        batch_size=batch,
        augment=augment,
        optimizer="adam",
        lr=1e-3,
        weight_decay=0.0,
        margin=1.0,
        device="cpu",
        ways=20,
        shots=1,
        queries=5,
    )
    spec = ModelSpec(
        model=model_name, loss=loss, image_size=(28, 28), embedding_norm=loss == "contrastive"
    )
    torch.manual_seed(0)
    model = build_model(spec)
    contiguous_model = build_model(spec)
    contiguous_model.load_state_dict(model.state_dict())
    if use_channels_last(cfg, torch.device("cpu")):
        model.to(memory_format=torch.channels_last)
    opt = build_optimizer(cfg, model)
    contiguous_opt = build_optimizer(cfg, contiguous_model)
    maker = BatchMaker(cfg, data)
    gen, aug_gen = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    augment_fn = None
    if augment == "affine":
        augment_fn = lambda x: random_affine(x, aug_gen, AffineRanges())  # noqa: E731

    def step_of(net, optimizer):
        def full_step():
            batch_idx = maker(gen)
            optimizer.zero_grad(set_to_none=True)
            loss_value, _ = compute_loss(cfg, net, batch_idx, data.images, data.labels, augment_fn)
            loss_value.backward()
            optimizer.step()

        return full_step

    full_step = step_of(model, opt)
    contiguous_step = step_of(contiguous_model, contiguous_opt)

    fixed = maker(gen)

    def fixed_tensors(index: torch.Tensor) -> torch.Tensor:
        return data.images[index].float()

    if loss == "proto":
        from siamnet.models.losses import prototypical_loss

        support, query = fixed_tensors(fixed["support"]), fixed_tensors(fixed["query"])
        ns = len(support)
        ways = int(fixed["support_labels"].max()) + 1

        def model_step():
            opt.zero_grad(set_to_none=True)
            e = model(torch.cat([support, query]))
            out, _ = prototypical_loss(
                e[:ns], fixed["support_labels"], e[ns:], fixed["query_labels"], ways
            )
            out.backward()
            opt.step()
    else:
        left, right = fixed_tensors(fixed["left"]), fixed_tensors(fixed["right"])
        target = fixed["target"]

        def model_step():
            opt.zero_grad(set_to_none=True)
            if loss == "bce":
                out = torch.nn.functional.binary_cross_entropy_with_logits(
                    model(left, right), target
                )
            else:
                from siamnet.models.losses import contrastive_loss

                e = model(torch.cat([left, right]))
                out = contrastive_loss(e[:batch], e[batch:], target)
            out.backward()
            opt.step()

    # Alternate the two, several rounds, and keep each one's best: on a shared machine the
    # slowest rounds measure the neighbours, not the code.
    t_full = t_model = t_contiguous = float("inf")
    for _ in range(rounds):
        t_full = min(t_full, timed(full_step, steps))
        t_model = min(t_model, timed(model_step, steps))
        t_contiguous = min(t_contiguous, timed(contiguous_step, steps))
    images = batch if loss == "proto" else 2 * batch
    return images * steps / t_full, images * steps / t_model, images * steps / t_contiguous


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="steps per timed round")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds, best kept")
    args = parser.parse_args()
    data = make_data()
    rows = []
    for model_name, loss, augment, batch in [
        ("seed-cnn", "bce", "none", 100),
        ("conv4", "contrastive", "none", 128),
        ("conv4", "contrastive", "affine", 128),
        ("conv4", "proto", "none", 120),  # 20-way 1-shot 5-query: 120 images
    ]:
        full, only, contiguous = measure(
            model_name, loss, augment, batch, args.steps, data, args.rounds
        )
        overhead = 1 - full / only
        rows.append(
            [
                f"{model_name} / {loss} / augment {augment}",
                batch,
                f"{full:,.0f}",
                f"{only:,.0f}",
                f"{overhead:.1%}",
                f"{contiguous:,.0f}",
                f"{full / contiguous:.2f}×",
            ]
        )
        print(rows[-1], flush=True)
    body = (
        "Images per second (pairs/s × 2 for pair losses; 20-way 1-shot 5-query episodes of 120 "
        "images for proto) of the full training step (sampling, augmentation, forward, backward, "
        "optimizer) against the model-only step on pre-made float tensors, same model and batch, "
        "60,000 generated 28×28 images; and the full step with the model in the contiguous "
        "(NCHW) layout against the channels-last layout training uses by default. Each is timed "
        f"in {args.rounds} alternating rounds of {args.steps} steps and the best round kept. "
        f"Measured on {machine()}.\n\n"
        + table(
            [
                "model / loss / augmentation",
                "batch (pairs; images for proto)",
                "full step images/s",
                "model-only images/s",
                "data path share",
                "full step, contiguous layout",
                "channels-last speed-up",
            ],
            rows,
        )
        + "\n\nReproduce: `python bench/train_throughput.py`"
    )
    write_section("Training throughput", body)


if __name__ == "__main__":
    main()
