"""Which recipe learns characters of alphabets it never saw? Omniglot's question, on glyphs.

Each recipe trains for the same time (seconds spent in training steps) on ``images_background``
of an Omniglot-layout data set (default: the glyphs `bench/make_glyphs.py` renders from real
writing systems) and is evaluated with `siamnet.evaluate.evaluate_checkpoint` on the held-out
alphabets of ``images_evaluation``: 5-way and 20-way 1-shot accuracy (± 95% CI, 1,000 seeded
episodes) under both protocols, *unstructured* (the N classes drawn from every evaluation
alphabet) and *within-group* (all N from one alphabet, as in Lake et al. and Koch et al.), and
pair accuracy on 10,000 fixed pairs at the threshold calibrated on validation pairs. Nearest
neighbour on raw pixels is the floor. Images are resized to 28×28 (``--image-size``) to keep
CPU time low.

Timed runs wait until no other benchmark is running (``pgrep -f bench/``): on a shared machine
two benchmarks at once would slow each other.

    python bench/make_glyphs.py
    python bench/recipes_grouped.py --data bench/.data/glyphs --budget 180
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import torch
from recipes import RECIPES as ALL_RECIPES

from siamnet.checkpoint import load_checkpoint
from siamnet.data.labeled import LabeledImages
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

# The recipes of bench/recipes.py, less conv4 + bce (far behind there on every data set).
RECIPES: dict[str, dict] = {
    name: overrides for name, overrides in ALL_RECIPES.items() if name != "conv4 + bce, Adam"
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
        found = subprocess.run(
            ["pgrep", "-af", "bench/"], capture_output=True, text=True, check=False
        ).stdout.splitlines()
    except FileNotFoundError:
        return []
    mine = _ancestors()
    return [line for line in found if int(line.split()[0]) not in mine]


def wait_for_quiet_machine(poll: float = 2.0, limit: float = 6 * 3600.0) -> float:
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


def steps_for_budget(
    base: dict, budget: float, epochs: int, probe_dir: Path, probe_steps: int = 20
) -> int:
    """Steps per epoch that fill `budget` seconds of training steps, timed by a short probe:
    two epochs of `probe_steps`, timed on the second (the first pays for warming up). Unlike
    bench/recipes.py, the budget leaves out data loading, validation and the final
    evaluation: decoding this many images and evaluating on them costs tens of seconds that
    are the same for every recipe, and would otherwise eat most of a short budget."""
    probe = TrainConfig(
        **{
            **base,
            "epochs": 2,
            "steps_per_epoch": probe_steps,
            "out": str(probe_dir),
            "overwrite": True,
        }
    )
    fit(probe)
    with open(probe_dir / "metrics.csv", newline="") as f:
        seconds = [float(row["seconds"]) for row in csv.DictReader(f)]
    per_step = (seconds[1] - seconds[0]) / probe_steps
    return max(5, int(budget / (per_step * epochs)))


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
                model, flat, data.labels, ways=n, shots=1, episodes=episodes, seed=0, groups=groups
            ).to_dict()
    return out


class OverlapWatch:
    """Notes any other benchmark that runs while the `with` block runs (polled in a thread)."""

    def __init__(self, poll: float = 5.0) -> None:
        self.poll = poll
        self.seen: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.wait(self.poll):
            self.seen.extend(o for o in other_benchmarks() if o not in self.seen)

    def __enter__(self) -> OverlapWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def timed_fit(
    base: dict, args: argparse.Namespace, work: Path, tries: int = 3
) -> tuple[dict, int, float, tuple[float, float]]:
    """Probe, then train for the budget with no other benchmark running; a run that another
    benchmark overlapped is repeated (up to `tries` times). Returns the summary, steps per
    epoch, wall seconds and the 1-minute load average before and after."""
    for attempt in range(1, tries + 1):
        for _ in range(tries):  # the probe's timing matters as much as the run's
            wait_for_quiet_machine()
            with OverlapWatch() as watch:
                steps = steps_for_budget(base, args.budget, args.epochs, work / "probe")
            if not watch.seen:
                break
            print(
                f"another benchmark ran during the probe ({'; '.join(watch.seen)}); again",
                flush=True,
            )
        cfg = TrainConfig(
            **{
                **base,
                "epochs": args.epochs,
                "steps_per_epoch": steps,
                "out": str(work / "run"),
                "overwrite": True,
            }
        )
        wait_for_quiet_machine()
        load_before = os.getloadavg()[0]
        with OverlapWatch() as watch:
            start = time.perf_counter()
            summary = fit(cfg)
            wall = time.perf_counter() - start
        load_after = os.getloadavg()[0]
        if not watch.seen or attempt == tries:
            if watch.seen:
                print(f"warning: overlapped by {'; '.join(watch.seen)}", flush=True)
            summary["overlapped_by"] = watch.seen
            return summary, steps, wall, (load_before, load_after)
        print(f"another benchmark ran meanwhile ({'; '.join(watch.seen)}); again", flush=True)
    raise AssertionError("unreachable")


def run_recipe(
    name: str, overrides: dict, args: argparse.Namespace, dataset: Dataset, work: Path
) -> dict:
    """Train one recipe for the budget and evaluate it; a JSON-ready record of both."""
    base = {
        "data": str(args.data),
        "image_size": tuple(args.image_size),
        "quiet": True,
        "device": "cpu",
        "seed": args.seed,
        **overrides,
    }
    summary, steps, wall, (load_before, load_after) = timed_fit(base, args, work)
    evaluation = evaluate_checkpoint(
        load_checkpoint(work / "run"),
        dataset,
        ways=WAYS,
        shots=(1,),
        episodes=args.episodes,
        seed=args.seed,
    )
    return {
        "recipe": name,
        "budget": args.budget,
        "steps_per_epoch": steps,
        "wall_seconds": wall,
        "load_before": load_before,
        "load_after": load_after,
        "summary": summary,
        "report": evaluation.report,
    }


HEADER = [
    "recipe",
    "epochs × steps",
    "train s",
    "wall s",
    "best epoch",
    *(f"{n}-way {p}" for n in WAYS for p in PROTOCOLS),
    "pair acc (calibrated)",
    "pair ROC AUC",
]


def row_for(record: dict) -> list[str]:
    """A table row from `run_recipe`'s record."""
    summary, report = record["summary"], record["report"]
    shots = one_shot(report)
    ver = report["verification"]
    calibrated = next(t for t in ver["thresholds"] if t["name"] == "calibrated")
    epochs = summary["epochs_run"]
    return [
        record["recipe"],
        f"{epochs}×{record['steps_per_epoch']}",
        f"{summary['train_seconds']:.0f}",
        f"{record['wall_seconds']:.0f}",
        f"{summary['best_epoch']}/{epochs}",
        *(_acc(shots.get((p, n))) for n in WAYS for p in PROTOCOLS),
        f"{calibrated['accuracy']:.3f}",
        f"{ver['roc_auc']:.3f}",
    ]


def protocol_gaps(records: list[dict]) -> str:
    """A sentence on how far within-group accuracy lies below unstructured, per N."""
    parts = []
    for n in WAYS:
        gaps = []
        for record in records:
            shots = one_shot(record["report"])
            if ("unstructured", n) in shots and ("within-group", n) in shots:
                gaps.append(
                    shots[("unstructured", n)]["accuracy"] - shots[("within-group", n)]["accuracy"]
                )
        if gaps:
            lower = sum(g > 0 for g in gaps)
            parts.append(
                f"{n}-way: lower in {lower} of {len(gaps)} recipes, by "
                f"{100 * min(gaps):.1f} to {100 * max(gaps):.1f} points"
            )
    return "Within-group accuracy against unstructured, trained recipes: " + "; ".join(parts) + "."


def per_group_of(data: LabeledImages) -> list[str]:
    """The data's groups (alphabets), in order of first appearance."""
    return list(dict.fromkeys(data.groups or []))


def section(records: list[dict], nn: dict, dataset: Dataset, args: argparse.Namespace) -> str:
    """The RESULTS.md section: what was measured, how, the table, how to reproduce it."""
    bg, ev = dataset.train, dataset.test
    rows = [
        [
            "nearest neighbour, raw pixels",
            "-",
            "-",
            "-",
            "-",
            *(_acc(nn[(p, n)]) for n in WAYS for p in PROTOCOLS),
            "-",
            "-",
        ]
    ]
    rows += [row_for(r) for r in records]
    budget = records[0].get("budget", args.budget) if records else args.budget
    epochs = records[0]["summary"]["epochs_run"] if records else args.epochs
    loads = [r[k] for r in records for k in ("load_before", "load_after")] or [float("nan")]
    per_group = Counter(ev.groups)
    within_20 = sum(1 for count in per_group.values() if count >= 20)
    overlapped = [r["recipe"] for r in records if r["summary"].get("overlapped_by")]
    data_arg = "" if args.data.resolve() == DEFAULT_DATA else f" --data {args.data}"
    return (
        f"Data: `{args.data.name}`, an Omniglot-layout set of real characters rendered from "
        f"fonts by `bench/make_glyphs.py` (from the Debian font packages its docstring "
        f"lists; other fonts give other data): 20 examples per character, each in another "
        f"font where the script has several, with a seeded distortion, redrawn with one pen. "
        f"Training on `images_background` ({len(per_group_of(bg))} alphabets: "
        f"{', '.join(per_group_of(bg))}; {bg.num_classes} characters, {len(bg):,} images; "
        f"20% of its characters held out for validation, which picks the best epoch and "
        f"calibrates the threshold), evaluation on the {len(per_group)} alphabets of "
        f"`images_evaluation` never seen in training ({', '.join(per_group_of(ev))}; "
        f"{ev.num_classes} characters, {len(ev):,} images). Images resized to "
        f"{args.image_size[0]}×{args.image_size[1]}.\n\n"
        f"Each recipe gets about {budget:.0f} s of training steps ({epochs} epochs; steps "
        f"per epoch from a timed probe of 2 epochs × 20 steps); `train s` is the time spent "
        f"in training steps, `wall s` that of the whole `fit` call, with data loading, "
        f"per-epoch validation and the final evaluation; `best epoch` is the one validation "
        f"chose. 1-shot accuracy over {args.episodes:,} seeded episodes (± 95% CI): "
        f"*unstructured* draws the N characters from all evaluation alphabets, *within-group* "
        f"from one alphabet ({within_20} of {len(per_group)} evaluation alphabets have the 20 "
        f"characters 20-way within-group needs). Pair accuracy on 10,000 fixed pairs of the "
        f"evaluation alphabets at the threshold calibrated on validation pairs. Measured on "
        f"{machine()}; every timed run waited until no other benchmark ran"
        + (
            f" (another one still overlapped: {', '.join(overlapped)})"
            if overlapped
            else " and none started during it"
        )
        + f"; 1-minute load average {min(loads):.2f}–{max(loads):.2f} before and after the "
        f"runs (this run's own training threads included).\n\n"
        + table(HEADER, rows)
        + "\n\n"
        + protocol_gaps(records)
        + "\n\nReproduce:\n\n```bash\npython bench/make_glyphs.py\n"
        f"python bench/recipes_grouped.py{data_arg} --budget {budget:.0f}\n```"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        type=Path,
        default=DEFAULT_DATA,
        help="an Omniglot-layout folder (images_background, images_evaluation)",
    )
    parser.add_argument(
        "--budget", type=float, default=180.0, help="seconds of training steps each (180)"
    )
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--image-size", type=int, nargs=2, default=(28, 28), metavar=("H", "W"))
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--recipes", help="comma-separated recipe numbers, 1-based (default all)")
    parser.add_argument("--json", type=Path, help="also write every record to this JSON file")
    parser.add_argument(
        "--from-json", type=Path, help="write the section from records saved by --json; no training"
    )
    parser.add_argument("--no-write", action="store_true", help="do not touch bench/RESULTS.md")
    args = parser.parse_args()
    if (
        not (args.data / "images_background").is_dir()
        or not (args.data / "images_evaluation").is_dir()
    ):
        sys.exit(
            f"{args.data}: expected images_background/ and images_evaluation/ "
            "(run python bench/make_glyphs.py first)"
        )
    chosen = list(RECIPES.items())
    if args.recipes:
        chosen = [chosen[int(i) - 1] for i in args.recipes.split(",")]
    dataset = load_dataset(str(args.data), tuple(args.image_size))
    nn = pixel_nearest_neighbour(dataset, args.episodes)
    print(
        "nearest neighbour, raw pixels:",
        {f"{n}-way {p}": _acc(nn[(p, n)]) for n in WAYS for p in PROTOCOLS},
        flush=True,
    )
    if args.from_json:
        records = json.loads(args.from_json.read_text())
    else:
        records = []
        with tempfile.TemporaryDirectory() as tmp:
            for name, overrides in chosen:
                records.append(run_recipe(name, overrides, args, dataset, Path(tmp)))
                print(row_for(records[-1]), flush=True)
                if args.json:  # after every recipe, so that a stopped run keeps what it did
                    args.json.write_text(json.dumps(records, indent=2, default=str) + "\n")
    body = section(records, nn, dataset, args)
    print(body)
    if not args.no_write:
        write_section(TITLE, body)


if __name__ == "__main__":
    main()
