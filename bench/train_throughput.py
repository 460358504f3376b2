"""Training throughput against the machine's matmul bound, in one run.

For each model and objective, the full training step (sampling, gathering uint8 images,
float conversion, forward, backward, Adam) is timed in float32 and with bf16 autocast (what
``--amp auto`` picks on a CPU with AMX tiles), beside the model-only step on pre-made float
tensors. Its rate in FLOP/s is images/s × the step's FLOP per image, counted by
`torch.utils.flop_counter.FlopCounterMode` (convolutions and matrix products, forward and
backward), and is reported as a fraction of fp32 and bf16 GEMM rates measured in the same run
(`torch.mm` of square matrices, the best of 1,024-2,048). The target is 70% of the fp32 bound.

Each model is measured in fresh child processes, alternating glibc's default allocator with
the one `siamnet train` sets up (`siamnet.allocator.keep_freed_memory`: freed memory kept in
the heap instead of handed back to the kernel), so that both run in one bench run; minor page
faults per step are counted with ``getrusage``.

Data: 60,000 generated uint8 28×28 images, 10 classes.

    python bench/train_throughput.py
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from siamnet.allocator import keep_freed_memory
from siamnet.data.labeled import LabeledImages
from siamnet.models.siamese import ModelSpec, build_model
from siamnet.objectives import get_objective
from siamnet.train import BatchMaker, TrainConfig, build_optimizer, compute_loss

from results import machine, table, write_section

ALLOCATORS = {"default": "glibc default", "kept": "freed memory kept"}

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


def child(case: int, allocator: str, steps: int, rounds: int) -> None:
    """Measure one case in this process and print its figures as one JSON line."""
    torch.set_num_threads(2)
    data = make_data()
    if allocator == "kept" and not keep_freed_memory():
        raise SystemExit("this C library has no mallopt: nothing to compare")
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    flop, per_step, rates = measure(*CASES[case], steps, data, rounds)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    timed_steps = len(rates) * rounds * (steps + 3) + 1
    print(
        json.dumps(
            {
                "flop": flop,
                "per_step": per_step,
                "rates": rates,
                "faults_per_step": faults / timed_steps,
            }
        )
    )


def run_child(case: int, allocator: str, steps: int, rounds: int) -> dict:
    done = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            str(case),
            "--allocator",
            allocator,
            "--steps",
            str(steps),
            "--rounds",
            str(rounds),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def best_of(runs: list[dict]) -> dict:
    best = dict(runs[0])
    best["rates"] = {k: max(r["rates"][k] for r in runs) for k in runs[0]["rates"]}
    best["faults_per_step"] = min(r["faults_per_step"] for r in runs)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="steps per timed round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per process")
    parser.add_argument("--repeats", type=int, default=2, help="processes per allocator, best kept")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument(
        "--allocator", choices=ALLOCATORS, default="default", help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child is not None:
        child(args.child, args.allocator, args.steps, args.rounds)
        return
    torch.set_num_threads(2)
    load_before = os.getloadavg()[0]
    fp32_gemm = gemm_rate(torch.float32)
    bf16_gemm = gemm_rate(torch.bfloat16)
    print(f"GEMM fp32 {fp32_gemm / 1e9:.0f} GFLOP/s, bf16 {bf16_gemm / 1e9:.0f} GFLOP/s")
    rows = []
    for index, (model_name, loss, pairs, _) in enumerate(CASES):
        runs = {name: [] for name in ALLOCATORS}
        for _ in range(args.repeats):
            for name in ALLOCATORS:
                runs[name].append(run_child(index, name, args.steps, args.rounds))
        best = {name: best_of(r) for name, r in runs.items()}
        for precision, bound in (("fp32", fp32_gemm), ("bf16", bf16_gemm)):
            for name, label in ALLOCATORS.items():
                got = best[name]
                full, only = got["rates"][f"full {precision}"], got["rates"][f"model {precision}"]
                baseline = best["default"]["rates"][f"full {precision}"]
                achieved = full * got["flop"]
                rows.append(
                    [
                        f"{model_name} / {loss}"
                        + (" / pairs in batch" if pairs == "batch" else ""),
                        got["per_step"],
                        f"{got['flop'] / 1e6:.1f}",
                        precision,
                        label,
                        f"{got['faults_per_step']:,.0f}",
                        f"{full:,.0f}",
                        f"{full / baseline:.2f}×",
                        f"{only:,.0f}",
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
        "tensors, in float32 and with bf16 autocast (what `--amp auto` picks on a CPU with AMX "
        "tiles; elsewhere `--amp bf16`), 60,000 generated 28×28 images, channels-last "
        "activations, with glibc's "
        "default allocator and with freed memory kept in the heap (what `siamnet train` and "
        "`siamnet evaluate` set up, `siamnet.allocator`). FLOP per image is the training "
        "step's (forward and backward) counted by `torch.utils.flop_counter`; achieved "
        "GFLOP/s = full-step images/s × FLOP per image, as a fraction of the fp32 and of the "
        f"same-precision GEMM rate measured in this run: fp32 {fp32_gemm / 1e9:.0f} GFLOP/s, "
        f"bf16 {bf16_gemm / 1e9:.0f} GFLOP/s (`torch.mm`, square 1,024-2,048). Each allocator "
        f"runs in {args.repeats} fresh processes, alternating; in each, every step is timed in "
        f"{args.rounds} alternating rounds of {args.steps} steps; the best is kept. Page faults "
        "are minor faults per step over all of a process's steps (fewest of its processes). "
        f"Measured on {machine()}; 1-minute load average {load_before:.2f} before, "
        f"{load_after:.2f} after.\n\n"
        + table(
            [
                "model / objective",
                "images per step",
                "MFLOP per image",
                "precision",
                "allocator",
                "page faults per step",
                "full step images/s",
                "vs. default allocator",
                "model-only images/s",
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
