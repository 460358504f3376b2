"""Training throughput against the machine's matmul bound, in one run.

For each model and objective, the full training step (sampling, gathering uint8 images,
float conversion, forward, backward, Adam) is timed in float32 and with bf16 autocast (what
``--amp auto`` picks on a CPU with AMX tiles), beside the model-only step on pre-made float
tensors. Its rate in FLOP/s is images/s × the step's FLOP per image, counted by
`torch.utils.flop_counter.FlopCounterMode` (convolutions and matrix products, forward and
backward), and is reported as a fraction of fp32 and bf16 GEMM rates measured in the same run
(`torch.mm` of square matrices, the best of 1,024-2,048). The target is 70% of the fp32 bound.

Data: 60,000 generated uint8 28×28 images, 10 classes.

    python bench/train_throughput.py
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from siamnet.data.labeled import LabeledImages
from siamnet.models.siamese import ModelSpec, build_model
from siamnet.objectives import get_objective
from siamnet.train import BatchMaker, TrainConfig, build_optimizer, compute_loss

from results import machine, table, write_section

#: (model, loss, --pairs, batch size): pairs for sampled pair losses, images otherwise.
CASES = [
    ("seed-cnn", "bce", "sampled", 100),
    ("seed-cnn", "bce", "batch", 100),
    ("conv4", "contrastive", "sampled", 128),
    ("conv4", "proto", "sampled", 120),  # 20-way 1-shot 5-query: 120 images
]


def make_data(n: int = 60000) -> LabeledImages:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (n,), generator=g)
    return LabeledImages(images, labels, [str(i) for i in range(10)], source="generated")


def gemm_rate(dtype: torch.dtype, rounds: int = 3) -> float:
    """Best FLOP/s of ``torch.mm`` on square `dtype` matrices of 1,024 and 2,048."""
    best = 0.0
    for n in (1024, 2048):
        a = torch.randn(n, n).to(dtype)
        b = torch.randn(n, n).to(dtype)
        for _ in range(2):
            a @ b
        reps = 8 if n == 1024 else 3
        for _ in range(rounds):
            start = time.perf_counter()
            for _ in range(reps):
                a @ b
            best = max(best, 2 * n**3 * reps / (time.perf_counter() - start))
    return best


def timed(step, steps: int) -> float:
    for _ in range(3):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return time.perf_counter() - start


def autocast(bf16: bool) -> contextlib.AbstractContextManager:
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast("cpu", dtype=torch.bfloat16)


def measure(model_name, loss, pairs, batch, steps, data, rounds):
    """(FLOP per image, images per step, {setting: images/s})."""
    cfg = TrainConfig(
        model=model_name,
        loss=loss,
        pairs=pairs,
        batch_size=batch,
        examples_per_class=10,
        optimizer="adam",
        lr=1e-3,
        margin=1.0,
        device="cpu",
        ways=20,
        shots=1,
        queries=5,
    ).resolved()
    objective = get_objective(loss)
    spec = ModelSpec(
        model=model_name,
        loss=loss,
        head=objective.head,
        image_size=(28, 28),
        embedding_norm=objective.embedding_norm,
        learned_temperature=objective.learned_temperature(cfg),
    )
    torch.manual_seed(0)
    model = build_model(spec).to(memory_format=torch.channels_last)
    opt = build_optimizer(cfg, model)
    maker = BatchMaker(cfg, data)
    gen = torch.Generator().manual_seed(1)

    def full_step(bf16: bool):
        def step():
            b = maker(gen)
            opt.zero_grad(set_to_none=True)
            with autocast(bf16):
                value, _ = compute_loss(cfg, model, b, data.images, data.labels, None)
            value.backward()
            opt.step()

        return step

    fixed = maker(gen)
    images_per_step = objective.images_in(fixed)
    floats = data.images.float()

    def model_step(bf16: bool):
        def fetch(index: torch.Tensor) -> torch.Tensor:  # pre-made float images, no gather
            return floats[: len(index)]

        def step():
            opt.zero_grad(set_to_none=True)
            with autocast(bf16):
                value, _ = objective.step(cfg, model, fixed, fetch, data.labels)
            value.backward()
            opt.step()

        return step

    with FlopCounterMode(display=False) as counter:
        model_step(False)()
    flop_per_image = counter.get_total_flops() / images_per_step
    steps_by_name = {
        "full fp32": full_step(False),
        "full bf16": full_step(True),
        "model fp32": model_step(False),
        "model bf16": model_step(True),
    }
    # Alternate, several rounds, and keep each one's best: on a shared machine the slowest
    # rounds measure the neighbours, not the code.
    best = dict.fromkeys(steps_by_name, float("inf"))
    for _ in range(rounds):
        for name, step in steps_by_name.items():
            best[name] = min(best[name], timed(step, steps))
    rates = {name: images_per_step * steps / t for name, t in best.items()}
    return flop_per_image, images_per_step, rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="steps per timed round")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds, best kept")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    data = make_data()
    fp32_gemm = gemm_rate(torch.float32)
    bf16_gemm = gemm_rate(torch.bfloat16)
    print(f"GEMM fp32 {fp32_gemm / 1e9:.0f} GFLOP/s, bf16 {bf16_gemm / 1e9:.0f} GFLOP/s")
    rows = []
    for model_name, loss, pairs, batch in CASES:
        flop, per_step, rates = measure(
            model_name, loss, pairs, batch, args.steps, data, args.rounds
        )
        for precision, bound in (("fp32", fp32_gemm), ("bf16", bf16_gemm)):
            full, only = rates[f"full {precision}"], rates[f"model {precision}"]
            achieved = full * flop
            rows.append(
                [
                    f"{model_name} / {loss}" + (" / pairs in batch" if pairs == "batch" else ""),
                    per_step,
                    f"{flop / 1e6:.1f}",
                    precision,
                    f"{full:,.0f}",
                    f"{only:,.0f}",
                    f"{1 - full / only:.1%}",
                    f"{achieved / 1e9:.0f}",
                    f"{achieved / fp32_gemm:.0%}",
                    f"{achieved / bound:.0%}",
                ]
            )
            print(rows[-1], flush=True)
    load_after = os.getloadavg()[0]
    body = (
        "Images per second of the full training step (drawing indices, gathering uint8 images, "
        "float conversion, forward, backward, Adam) and of the model-only step on pre-made float "
        "tensors, in float32 and with bf16 autocast (`--amp auto` on a CPU with AMX tiles), "
        "60,000 generated 28×28 images, channels-last activations. FLOP per image is the "
        "training step's (forward and backward) counted by `torch.utils.flop_counter`; achieved "
        "GFLOP/s = full-step images/s × FLOP per image, as a fraction of the fp32 and of the "
        f"same-precision GEMM rate measured in this run: fp32 {fp32_gemm / 1e9:.0f} GFLOP/s, "
        f"bf16 {bf16_gemm / 1e9:.0f} GFLOP/s (`torch.mm`, square 1,024-2,048). Each step is "
        f"timed in {args.rounds} alternating rounds of {args.steps} steps, best kept. Measured "
        f"on {machine()}; 1-minute load average {load_before:.2f} before, {load_after:.2f} "
        "after.\n\n"
        + table(
            [
                "model / objective",
                "images per step",
                "MFLOP per image",
                "precision",
                "full step images/s",
                "model-only images/s",
                "data path share",
                "achieved GFLOP/s",
                "of fp32 GEMM",
                "of same-precision GEMM",
            ],
            rows,
        )
        + "\n\nReproduce: `python bench/train_throughput.py`"
    )
    write_section("Training throughput", body)


if __name__ == "__main__":
    main()
