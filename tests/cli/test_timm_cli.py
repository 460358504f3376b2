"""A tiny timm model end to end through the installed command: `siamnet train --model
timm:test_resnet --pretrained FILE` on a small colour folder (photo augmentation, frozen batch
norm), then `evaluate`, `compare`, `classify`, `index build`, `export` (ONNX and TorchScript,
with their parity checks) and `serve` on its run folder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from siamnet.checkpoint import load_checkpoint

from helpers import ENV, SIAMNET

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serve"))
from service_process import Service  # noqa: E402  (the serve tests' subprocess helper)

pytestmark = pytest.mark.slow

CLASSES = ["amber", "azure", "coral", "lime", "plum", "teal"]


def write_colour_folder(root: Path, per_class: int, seed: int) -> Path:
    """`per_class` 40×48 colour images of each class (a class is a colour and a stripe
    direction) under ``root/CLASS/``, as PNG and JPEG, each with its own noise and offset."""
    rng = np.random.default_rng(seed)
    palette = rng.integers(40, 216, (len(CLASSES), 3))
    yy, xx = np.mgrid[0:40, 0:48]
    for k, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            phase = rng.uniform(0, 6.3)
            stripes = np.sin((xx if k % 2 else yy) / 3.0 + phase)[..., None]
            image = palette[k] + 35 * stripes + rng.normal(0, 12, (40, 48, 3))
            pixels = Image.fromarray(image.clip(0, 255).astype(np.uint8))
            pixels.save(root / name / f"{i}.{'png' if i % 2 else 'jpg'}")
    return root


def run(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run(
        [SIAMNET, *map(str, args)], capture_output=True, text=True, env=ENV, timeout=600
    )


@pytest.fixture(scope="module")
def timm_run(tmp_path_factory) -> dict:
    """Train 2 episodes from local weights, then run every verb on the run at once."""
    root = tmp_path_factory.mktemp("timm-cli")
    data = write_colour_folder(root / "photos", per_class=6, seed=0)
    support = write_colour_folder(root / "support", per_class=1, seed=1)
    queries = write_colour_folder(root / "queries", per_class=1, seed=2)
    torch.manual_seed(0)
    save_file(timm.create_model("test_resnet").state_dict(), str(root / "weights.safetensors"))
    out = root / "run"
    train = run(
        "train", "--data", data, "--model", "timm:test_resnet", "--pretrained",
        root / "weights.safetensors", "--image-size", "32", "--loss", "proto", "--ways", "3",
        "--shots", "1", "--queries", "2", "--epochs", "1", "--steps-per-epoch", "2",
        "--no-rotate-classes", "--augment", "photo", "--freeze-bn",
        "--device", "cpu", "--quiet", "--json", "--out", out,
    )  # fmt: skip
    assert train.returncode == 0, train.stderr
    a, b = queries / "amber" / "0.jpg", queries / "azure" / "0.jpg"
    verbs = {
        "evaluate": ["evaluate", out, "--data", data, "--json", "-"],
        "compare": ["compare", out, a, b, "--json"],
        "classify": ["classify", out, "--support", support, "--query", queries, "--json"],
        "index": ["index", "build", out, "--data", data, "--out", root / "gallery", "--json"],
        "onnx": ["export", out, "--format", "onnx", "--out", root / "onnx" / "m.onnx", "--json"],
        "torchscript": ["export", out, "--format", "torchscript", "--out", root / "ts" / "m.pt"],
    }
    for name in ("onnx", "ts"):
        (root / name).mkdir()
    running = {
        name: subprocess.Popen([SIAMNET, *map(str, argv)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=ENV)
        for name, argv in verbs.items()
    }  # fmt: skip
    results = {}
    for name, process in running.items():
        stdout, stderr = process.communicate(timeout=600)
        results[name] = (process.returncode, stdout, stderr)
    return {"root": root, "run": out, "a": a, "b": b, "train": train, "results": results}


def output(timm_run: dict, verb: str, as_json: bool = True):
    status, stdout, stderr = timm_run["results"][verb]
    assert status == 0, stderr
    assert "Traceback" not in stderr
    return json.loads(stdout) if as_json else stdout


def test_train_records_the_timm_model_and_starts_from_the_file(timm_run):
    ckpt = load_checkpoint(timm_run["run"])
    spec = ckpt.spec
    assert (spec.model, spec.in_channels, spec.image_size) == ("timm:test_resnet", 3, (32, 32))
    assert spec.normalization["mean"] == [0.5, 0.5, 0.5]  # the pretrained configuration's
    args = ckpt.metadata["training_args"]
    assert args["pretrained"].endswith("weights.safetensors") and args["freeze_bn"] is True
    assert args["backbone_lr_factor"] == 0.1
    weights = load_file(str(timm_run["root"] / "weights.safetensors"))
    state = ckpt.model.backbone.state_dict()
    # batch-norm statistics frozen at the file's; the filters fine-tuned from it
    assert torch.equal(state["bn1.running_mean"], weights["bn1.running_mean"])
    assert not torch.equal(state["conv1.0.weight"], weights["conv1.0.weight"])
    assert state["conv1.0.weight"].shape == weights["conv1.0.weight"].shape


def test_evaluate_compare_classify_and_index(timm_run):
    report = output(timm_run, "evaluate")
    assert report["model"]["backbone"] == "timm:test_resnet"
    assert 0 <= report["verification"]["roc_auc"] <= 1
    compared = output(timm_run, "compare")
    assert compared["head"] == "euclidean" and compared["same"] in (True, False)
    classified = output(timm_run, "classify")
    assert len(classified["predictions"]) == len(CLASSES)
    assert {p["best"] for p in classified["predictions"]} <= set(CLASSES)
    built = output(timm_run, "index")
    assert built["items"] == 6 * len(CLASSES)


def test_exports_pass_their_parity_checks(timm_run):
    onnx = output(timm_run, "onnx")
    assert onnx["embedding_max_abs_diff"] <= onnx["tolerance"]
    assert onnx["score_max_abs_diff"] <= onnx["tolerance"]
    text = output(timm_run, "torchscript", as_json=False)
    assert "parity with PyTorch" in text
    root = timm_run["root"]
    assert (root / "onnx" / "m.onnx").is_file() and (root / "ts" / "m.pt").is_file()


def test_the_service_answers_as_the_command(timm_run):
    service = Service([str(timm_run["run"]), "--device", "cpu"], cwd=timm_run["root"])
    try:
        a, b = timm_run["a"], timm_run["b"]
        files = {
            "a": (a.name, a.read_bytes(), "image/jpeg"),
            "b": (b.name, b.read_bytes(), "image/jpeg"),
        }
        answer = httpx.post(service.url + "compare", files=files, timeout=60)
        assert answer.status_code == 200, answer.text
        expected = output(timm_run, "compare")
        assert answer.json()["score"] == pytest.approx(expected["score"], rel=1e-5, abs=1e-6)
    finally:
        service.stop()
