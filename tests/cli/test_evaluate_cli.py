"""`siamnet evaluate|calibrate|plot` and examples/blog_post.py end to end through the installed
command, on a tiny model trained on digits 0-5 (digits 6-9 held out)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from siamnet.checkpoint import load_checkpoint
from siamnet.cli import main
from siamnet.data.registry import load_dataset
from siamnet.train import TrainConfig, fit

from helpers import ENV, SIAMNET, siamnet

pytestmark = pytest.mark.slow
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "blog_post.py"
UNSEEN = ["6", "7", "8", "9"]


def ok(*args: object) -> subprocess.CompletedProcess:
    result = siamnet(*args)
    assert result.returncode == 0, result.stderr
    return result


def one_line_error(argv: list[str], capsys) -> str:
    """Run the CLI in this process; expect exit status 2 and one ``siamnet: error:`` line."""
    try:
        status = main(argv)
    except SystemExit as exc:  # argparse's own errors
        status = exc.code
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and err[0].startswith("siamnet: error: "), err
    return err[0]


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory) -> Path:
    """A conv4 / contrastive model trained for 10 steps on digits 0-5."""
    out = tmp_path_factory.mktemp("evaluate-cli") / "run"
    fit(
        TrainConfig(
            model="conv4",
            loss="contrastive",
            epochs=1,
            steps_per_epoch=10,
            batch_size=32,
            val_pairs=400,
            val_episodes=100,
            eval_classes=UNSEEN,
            out=str(out),
            quiet=True,
            device="cpu",
        )
    )
    return out


def test_evaluate_json_on_unseen_classes(run_dir):
    report = json.loads(ok("evaluate", run_dir, "--json", "-", "--episodes", "300").stdout)
    assert report["evaluation_data"]["classes"] == UNSEEN
    assert report["evaluation_data"]["unseen_classes"] is True
    ver = report["verification"]
    assert ver["pairs"] == 10000 and ver["positives"] == 5000
    assert 0.5 < ver["roc_auc"] <= 1 and 0 <= ver["eer"] < 0.5
    for row in ver["thresholds"]:
        assert {"threshold", "accuracy", "precision", "recall", "far", "frr"} <= set(row)
        assert all(0 <= row[k] <= 1 for k in ("accuracy", "precision", "recall", "far", "frr"))
    rows = report["one_shot"]
    assert {(r["ways"], r["shots"], r["scoring"]) for r in rows} == {
        (4, 1, "mean"),
        (4, 5, "mean"),
        (4, 5, "prototype"),
    }  # 5, 10, 20 capped at 4 classes
    for r in rows:
        assert r["episodes"] == 300 and r["protocol"] == "unstructured"
        assert 0.25 < r["accuracy"] <= 1 and 0 < r["ci95"] < 0.1
    retrieval = report["retrieval"]
    recalls = [retrieval["recall_at_k"][k] for k in ("1", "2", "4", "8")]
    assert recalls == sorted(recalls) and 0.25 < recalls[0] <= 1
    assert 0 < retrieval["map_at_r"] <= retrieval["r_precision"] + 1e-9 <= 1 + 1e-9
    assert retrieval["queries"] == report["evaluation_data"]["images"]
    assert set(report["retrieval_pixels"]["recall_at_k"]) == {"1", "2", "4", "8"}


def test_evaluate_table_and_json_file(run_dir, tmp_path):
    out = tmp_path / "report.json"
    result = ok(
        "evaluate",
        run_dir,
        "--data",
        "digits",
        "--ways",
        "3",
        "--shots",
        "1",
        "--episodes",
        "200",
        "--json",
        out,
    )
    assert "ROC AUC" in result.stdout and "unstructured" in result.stdout
    assert "never seen in training" in result.stdout
    assert "Recall@1" in result.stdout and "MAP@R" in result.stdout
    report = json.loads(out.read_text())
    assert [(r["ways"], r["shots"]) for r in report["one_shot"]] == [(3, 1)]


def test_calibrate_changes_the_threshold_that_compare_uses(run_dir, tmp_path):
    ckpt = tmp_path / "best.pt"
    ckpt.write_bytes((run_dir / "best.pt").read_bytes())
    before = load_checkpoint(ckpt).threshold
    result = ok("calibrate", ckpt, "--target-far", "0.05")
    assert "old threshold" in result.stdout and "false-accept rate" in result.stdout
    meta = load_checkpoint(ckpt).metadata
    assert meta["threshold"] != before and meta["calibration"]["far"] <= 0.05
    test = load_dataset("digits").test
    for i, name in enumerate(("a.png", "b.png")):
        Image.fromarray(test.images[i, 0].numpy()).save(tmp_path / name)
    compared = json.loads(
        ok("compare", ckpt, tmp_path / "a.png", tmp_path / "b.png", "--json").stdout
    )
    assert compared["threshold"] == pytest.approx(meta["threshold"])


def test_plot_writes_a_png_of_every_kind(run_dir, tmp_path):
    kinds = ["pairs", "predictions", "roc", "embeddings", "episodes", "curves"]
    running = {}
    for kind in kinds:  # started together: most of each run is starting Python and torch
        extra = ["--points", "200"] if kind == "embeddings" else []
        argv = [SIAMNET, "plot", kind, str(run_dir), "--out", str(tmp_path / f"{kind}.png"), *extra]
        running[kind] = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV
        )
    for kind, process in running.items():
        stdout, stderr = process.communicate(timeout=300)
        out = tmp_path / f"{kind}.png"
        assert process.returncode == 0, (kind, stderr)
        assert stdout.strip() == str(out)
        with Image.open(out) as image:
            assert image.format == "PNG" and image.size[0] >= 500 and image.size[1] >= 200


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["evaluate", "{run}", "--ways", "1"], "--ways 1"),
        (["evaluate", "{run}", "--ways", "five"], "--ways 'five'"),
        (["evaluate", "{run}", "--eval-classes", "6,x"], "'x'"),
        (["evaluate", "{run}", "--data", "no/such/file.csv"], "no/such/file.csv"),
        (["evaluate", "no/such/run"], "no/such/run"),
        (["calibrate", "{run}", "--target-far", "2"], "--target-far"),
        (["calibrate", "{run}", "--target-far", "0.1", "--best-accuracy"], "not both"),
        (["calibrate", "{run}", "--pairs", "many"], "--pairs"),
        (["plot", "roc", "--out", "x.png"], "CKPT_OR_RUN"),
        (["plot", "roc", "{run}", "--out", "x.jpg"], "PNG"),
        (["plot", "histogram", "{run}", "--out", "x.png"], "histogram"),
    ],
)
def test_bad_arguments_are_one_line_errors(run_dir, capsys, argv, fragment):
    line = one_line_error([a.replace("{run}", str(run_dir)) for a in argv], capsys)
    assert fragment in line


def test_blog_post_example_runs_end_to_end(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            str(EXAMPLE),
            "--out",
            str(tmp_path / "post"),
            "--epochs",
            "1",
            "--steps",
            "20",
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    for name in ("pairs.png", "predictions.png", "run/best.pt"):
        assert (tmp_path / "post" / name).is_file(), name
    assert "test pairs right" in result.stdout
