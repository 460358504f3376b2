"""Which recipe learns characters of alphabets it never saw? Omniglot's question, on glyphs.

Each recipe trains for the same wall-clock budget on ``images_background`` of an Omniglot-layout
data set (default: the glyphs `bench/make_glyphs.py` renders from real writing systems) and is
evaluated with `siamnet.evaluate.evaluate_checkpoint` on the held-out alphabets of
``images_evaluation``: 5-way and 20-way 1-shot accuracy (± 95% CI, 1,000 seeded episodes) under
both protocols, *unstructured* (the N classes drawn from every evaluation alphabet) and
*within-group* (all N from one alphabet, as in Lake et al. and Koch et al.), and pair accuracy
on 10,000 fixed pairs at the threshold calibrated on validation pairs. Nearest neighbour on raw
pixels is the floor. Images are resized to 28×28 (``--image-size``) to keep CPU time low.

Timed runs wait until no other benchmark is running (``pgrep -f bench/``): on a shared machine
two benchmarks at once would slow each other.

    python bench/make_glyphs.py
    python bench/recipes_grouped.py --data bench/.data/glyphs --budget 180
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from siamnet.checkpoint import load_checkpoint
from siamnet.data.registry import Dataset, load_dataset
from siamnet.evaluate import evaluate_checkpoint, few_shot_accuracy, group_ids
from siamnet.models.heads import DistanceHead
from siamnet.models.siamese import SiameseNet
from siamnet.train import TrainConfig, fit

from results import machine, table, write_section

os.environ.setdefault("SIAMNET_NO_TENSORBOARD", "1")

DEFAULT_DATA = Path(__file__).resolve().parent / ".data" / "glyphs"
TITLE = "Recipes on held-out alphabets: glyphs"
WAYS = (5, 20)
PROTOCOLS = ("unstructured", "within-group")

RECIPES: dict[str, dict] = {
    "post (seed-cnn, bce, SGD, raw pixels)": {"preset": "seed", "log_every": 0},
    "conv4 + contrastive, Adam": {"model": "conv4", "loss": "contrastive",
                                  "rotate_classes": False},
    "conv4 + triplet (semi-hard), Adam": {"model": "conv4", "loss": "triplet",
                                          "rotate_classes": False},
    "conv4 + proto, Adam": {"model": "conv4", "loss": "proto", "rotate_classes": False},
    "siamnet default: conv4 + proto, rotated classes": {},
}


# --- a quiet machine --------------------------------------------------------------------------


def _ancestors() -> set[int]:
    """This process and its parents (their command lines may name bench/ too)."""
    pids, pid = set(), os.getpid()
    while pid > 1 and pid not in pids:
        pids.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat.rsplit(")", 1)[1].split()[1])
    return pids


def other_benchmarks() -> list[str]:
    """``pid command`` of every process whose command line names bench/, but this one's."""
    try:
        found = subprocess.run(["pgrep", "-af", "bench/"], capture_output=True, text=True,
                               check=False).stdout.splitlines()
    except FileNotFoundError:
        return []
    mine = _ancestors()
    return [line for line in found if int(line.split()[0]) not in mine]


def wait_for_quiet_machine(poll: float = 15.0, limit: float = 6 * 3600.0) -> float:
    """Block until no other benchmark runs (at most `limit` seconds); returns seconds waited."""
    start = time.monotonic()
    announced = False
    while (others := other_benchmarks()) and time.monotonic() - start < limit:
        if not announced:
            print(f"waiting for other benchmarks to finish: {'; '.join(others)}", flush=True)
            announced = True
        time.sleep(poll)
    return time.monotonic() - start


# --- training and evaluating ------------------------------------------------------------------


def steps_for_budget(base: dict, budget: float, epochs: int, probe_dir: Path) -> int:
    """Steps per epoch that fill `budget` seconds, from a short timed probe run (as in
    bench/recipes.py): the probe's time per step, less half the probe's fixed overhead (data
    loading, validation, final evaluation) per epoch."""
    probe = TrainConfig(**{**base, "epochs": 1, "steps_per_epoch": 20, "out": str(probe_dir),
                           "overwrite": True})
    start = time.perf_counter()
    summary = fit(probe)
    total = time.perf_counter() - start
    per_step = summary["train_seconds"] / 20
    overhead = max(0.0, total - summary["train_seconds"])
    return max(5, int((budget - overhead * epochs * 0.5) / (per_step * epochs)))


def one_shot(report: dict) -> dict[tuple[str, int], dict]:
    """``{(protocol, ways): row}`` of a report's 1-shot rows."""
    return {(r["protocol"], r["ways"]): r for r in report["one_shot"] if r["shots"] == 1}


def _acc(row: dict | None) -> str:
    return "-" if row is None else f"{row['accuracy']:.3f} ± {row['ci95']:.3f}"


def pixel_nearest_neighbour(dataset: Dataset, episodes: int) -> dict[tuple[str, int], dict]:
    """1-shot accuracy of nearest neighbour on raw pixels, both protocols, on evaluation."""
    data = dataset.test
    model = SiameseNet(torch.nn.Identity(), DistanceHead())
    flat = data.images.flatten(1).float()
    out = {}
    for protocol, groups in (("unstructured", None), ("within-group", group_ids(data))):
        for n in WAYS:
            out[(protocol, n)] = few_shot_accuracy(
                model, flat, data.labels, ways=n, shots=1, episodes=episodes, seed=0,
                groups=groups).to_dict()
    return out


def run_recipe(name: str, overrides: dict, args: argparse.Namespace, dataset: Dataset,
               work: Path) -> tuple[list, dict]:
    base = {"data": str(args.data), "image_size": tuple(args.image_size), "quiet": True,
            "device": "cpu", "seed": args.seed, **overrides}
    wait_for_quiet_machine()
    load_before = os.getloadavg()[0]
    steps = steps_for_budget(base, args.budget, args.epochs, work / "probe")
    run_dir = work / "run"
    cfg = TrainConfig(**{**base, "epochs": args.epochs, "steps_per_epoch": steps,
                         "out": str(run_dir), "overwrite": True})
    wait_for_quiet_machine()
    start = time.perf_counter()
    summary = fit(cfg)
    wall = time.perf_counter() - start
    load_after = os.getloadavg()[0]
    evaluation = evaluate_checkpoint(load_checkpoint(run_dir), dataset, ways=WAYS, shots=(1,),
                                     episodes=args.episodes, seed=args.seed)
    report = evaluation.report
    shots = one_shot(report)
    ver = report["verification"]
    calibrated = next(t for t in ver["thresholds"] if t["name"] == "calibrated")
    row = [name, f"{args.epochs}×{steps}", f"{summary['train_seconds']:.0f}", f"{wall:.0f}",
           *(_acc(shots.get((p, n))) for n in WAYS for p in PROTOCOLS),
           f"{calibrated['accuracy']:.3f}", f"{ver['roc_auc']:.3f}"]
    record = {"recipe": name, "steps_per_epoch": steps, "wall_seconds": wall,
              "load_before": load_before, "load_after": load_after, "summary": summary,
              "report": report}
    return row, record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="an Omniglot-layout folder (images_background, images_evaluation)")
    parser.add_argument("--budget", type=float, default=180.0, help="seconds of training each")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--image-size", type=int, nargs=2, default=(28, 28), metavar=("H", "W"))
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--recipes", help="comma-separated recipe numbers, 1-based (default all)")
    parser.add_argument("--json", type=Path, help="also write every report to this JSON file")
    parser.add_argument("--no-write", action="store_true", help="do not touch bench/RESULTS.md")
    args = parser.parse_args()
    if not (args.data / "images_background").is_dir() or not (
            args.data / "images_evaluation").is_dir():
        sys.exit(f"{args.data}: expected images_background/ and images_evaluation/ "
                 "(run python bench/make_glyphs.py first)")
    chosen = list(RECIPES.items())
    if args.recipes:
        chosen = [chosen[int(i) - 1] for i in args.recipes.split(",")]
    dataset = load_dataset(str(args.data), tuple(args.image_size))
    bg, ev = dataset.train, dataset.test
    header = ["recipe", "epochs × steps", "train s", "wall s",
              *(f"{n}-way {p}" for n in WAYS for p in PROTOCOLS),
              "pair acc (calibrated)", "pair ROC AUC"]
    nn = pixel_nearest_neighbour(dataset, args.episodes)
    rows = [["nearest neighbour, raw pixels", "-", "-", "-",
             *(_acc(nn[(p, n)]) for n in WAYS for p in PROTOCOLS), "-", "-"]]
    print(rows[-1], flush=True)
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, overrides in chosen:
            row, record = run_recipe(name, overrides, args, dataset, Path(tmp))
            rows.append(row)
            records.append(record)
            print(row, flush=True)
    if args.json:
        args.json.write_text(json.dumps(records, indent=2, default=str) + "\n")
    loads = [r[k] for r in records for k in ("load_before", "load_after")]
    per_group = {g: 0 for g in ev.groups}
    for g in ev.groups:
        per_group[g] += 1
    within_20 = sum(1 for count in per_group.values() if count >= 20)
    print(table(header, rows))
    if args.no_write:
        return
    data_arg = "" if args.data.resolve() == DEFAULT_DATA else f" --data {args.data}"
    body = (
        f"Data: `{args.data.name}`, an Omniglot-layout set of real characters rendered from "
        f"fonts by `bench/make_glyphs.py` (20 examples per character, each in another font "
        f"and with a seeded distortion). Training on `images_background` "
        f"({len(set(bg.groups))} alphabets, {bg.num_classes} characters, {len(bg):,} images; "
        f"20% of its characters held out for validation, which picks the best epoch and "
        f"calibrates the threshold), evaluation on the {len(set(ev.groups))} alphabets of "
        f"`images_evaluation` ({ev.num_classes} characters, {len(ev):,} images), never seen "
        f"in training. Images resized to {args.image_size[0]}×{args.image_size[1]}.\n\n"
        f"Each recipe trains for about {args.budget:.0f} s ({args.epochs} epochs; steps per "
        f"epoch set by a 20-step timed probe); `train s` is time in training steps, `wall s` "
        f"adds data loading, per-epoch validation and the final evaluation. 1-shot accuracy "
        f"over {args.episodes:,} seeded episodes (± 95% CI): *unstructured* draws the N "
        f"characters from all evaluation alphabets, *within-group* from one alphabet "
        f"({within_20} of {len(per_group)} evaluation alphabets have the 20 characters "
        f"20-way within-group needs). Pair accuracy on 10,000 fixed pairs of the evaluation "
        f"alphabets at the threshold calibrated on validation pairs. Measured on {machine()}; "
        f"every timed run waited until no other benchmark ran; 1-minute load average "
        f"{min(loads):.2f}–{max(loads):.2f} before and after the runs.\n\n"
        + table(header, rows)
        + "\n\nReproduce:\n\n```bash\npython bench/make_glyphs.py\n"
        f"python bench/recipes_grouped.py{data_arg} --budget {args.budget:.0f}\n```"
    )
    write_section(TITLE, body)


if __name__ == "__main__":
    main()
