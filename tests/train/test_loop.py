"""Training: a short run end to end, reproducibility, every loss, resume after SIGKILL,
refusals, non-finite loss, and data-parallel training with two real processes."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from siamnet.checkpoint import load_checkpoint, read_checkpoint_payload
from siamnet.errors import ArgumentError
from siamnet.models.siamese import ModelSpec, build_model
from siamnet.train import TrainConfig, TrainingError, fit, use_channels_last

from helpers import ENV, SIAMNET


def small(out: Path, **kw) -> TrainConfig:
    values = dict(
        model="conv4",
        loss="contrastive",
        epochs=2,
        steps_per_epoch=15,
        batch_size=32,
        val_pairs=400,
        val_episodes=100,
        out=str(out),
        quiet=True,
        device="cpu",
    )
    values.update(kw)
    return TrainConfig(**values)


def weights(path: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint_payload(path)["model"]


def test_short_run_writes_checkpoints_metrics_and_reports_unseen_classes(tmp_path):
    summary = fit(small(tmp_path / "run"))
    run = tmp_path / "run"
    for name in ("best.pt", "last.pt", "metrics.csv", "summary.json"):
        assert (run / name).is_file(), name
    rows = (run / "metrics.csv").read_text().strip().splitlines()
    assert rows[0].startswith("epoch,train_loss") and len(rows) == 3
    assert summary["unseen_classes"] == ["6", "7", "8", "9"]
    assert summary["oneshot"]["ways"] == 4 and summary["oneshot"]["episodes"] == 1000
    assert summary["oneshot"]["accuracy"] > 0.25  # better than chance after a few steps
    assert 0.5 < summary["test_pair_acc"] <= 1.0
    ckpt = load_checkpoint(run)
    assert ckpt.metadata["classes"] == ["0", "1", "2", "3", "4", "5"]
    assert ckpt.metadata["training_args"]["loss"] == "contrastive"
    assert ckpt.metadata["threshold_source"].startswith("best accuracy")
    assert ckpt.training is None  # best.pt holds weights only; last.pt holds the training state
    assert load_checkpoint(run / "last.pt").training is not None


def test_same_seed_same_weights_and_different_seed_differs(tmp_path):
    fit(small(tmp_path / "a", epochs=1))
    fit(small(tmp_path / "b", epochs=1))
    fit(small(tmp_path / "c", epochs=1, seed=1))
    a, b, c = (weights(tmp_path / n / "last.pt") for n in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize(
    "loss,extra",
    [("bce", {}), ("triplet", {"mining": "hard"}), ("triplet", {}), ("proto", {"ways": 5})],
)
def test_every_loss_trains_and_beats_chance(tmp_path, loss, extra):
    summary = fit(small(tmp_path / "run", loss=loss, **extra))
    assert summary["oneshot"]["accuracy"] > 0.3, summary["oneshot"]
    head = load_checkpoint(tmp_path / "run").metadata["model_spec"]["head"]
    assert head == ("l1" if loss == "bce" else "euclidean")


def test_refuses_to_overwrite_a_run_unless_asked_and_never_a_folder_that_is_not_a_run(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("keep me")
    with pytest.raises(ArgumentError, match="--overwrite"):
        fit(small(run, epochs=1))
    with pytest.raises(ArgumentError, match="not a siamnet run folder"):
        fit(small(run, epochs=1, overwrite=True))
    assert [p.name for p in run.iterdir()] == ["notes.txt"]
    (run / "notes.txt").unlink()
    fit(small(run, epochs=1, steps_per_epoch=3))
    fit(small(run, epochs=1, steps_per_epoch=4, overwrite=True))
    assert load_checkpoint(run / "last.pt").metadata["training_args"]["steps_per_epoch"] == 4


def test_overwrite_keeps_the_old_run_until_the_new_one_has_a_checkpoint(tmp_path):
    run = tmp_path / "run"
    fit(small(run, epochs=1, steps_per_epoch=3))
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    exploding = small(run, loss="bce", optimizer="sgd", normalize="raw", lr=1e30, overwrite=True)
    with pytest.raises(TrainingError, match="loss became"):
        fit(exploding)  # fails inside its first epoch, before any checkpoint
    after = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    assert after == before
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # nothing left aside


def test_non_finite_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint(tmp_path):
    run = tmp_path / "run"
    cfg = small(run, loss="bce", optimizer="sgd", normalize="raw", schedule="exp:1e30", epochs=3)
    with pytest.raises(TrainingError, match="loss became"):
        fit(cfg)
    ckpt = load_checkpoint(run / "last.pt")
    assert ckpt.metadata["epoch"] == 1
    assert all(torch.isfinite(t).all() for t in weights(run / "last.pt").values())


def test_memory_format_choice_and_the_same_math_in_either_layout(tmp_path):
    cpu, mps = torch.device("cpu"), torch.device("mps")
    default = TrainConfig().resolved()
    assert use_channels_last(default, cpu) and not use_channels_last(default, mps)
    assert not use_channels_last(TrainConfig(memory_format="contiguous"), cpu)
    with pytest.raises(ArgumentError, match="--memory-format 'nhwc'"):
        use_channels_last(TrainConfig(memory_format="nhwc"), cpu)
    torch.manual_seed(0)
    plain = build_model(ModelSpec(model="conv4", loss="contrastive", image_size=(28, 28)))
    nhwc = copy.deepcopy(plain).to(memory_format=torch.channels_last)
    x = torch.rand(8, 1, 28, 28) * 255
    a, b = plain(x), nhwc(x)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    a.square().sum().backward()
    b.square().sum().backward()
    scale = max(float(p.grad.abs().max()) for p in plain.parameters())  # ~100 here
    for (name, p), q in zip(plain.named_parameters(), nhwc.parameters(), strict=True):
        assert float((p.grad - q.grad).abs().max()) <= 1e-5 * scale, name
    for layout in ("channels-last", "contiguous"):
        summary = fit(small(tmp_path / layout, epochs=1, memory_format=layout))
        assert summary["test_pair_acc"] > 0.6
        assert load_checkpoint(tmp_path / layout).metadata["training_args"]["memory_format"] == (
            layout
        )


def _train_cmd(out: Path, *extra: str) -> list[str]:
    return [
        SIAMNET,
        "train",
        "--model",
        "conv4",
        "--loss",
        "contrastive",
        "--epochs",
        "4",
        "--steps-per-epoch",
        "25",
        "--batch-size",
        "32",
        "--device",
        "cpu",
        "--augment",
        "affine",
        "--out",
        str(out),
        "--quiet",
        *extra,
    ]


def _epoch_of(path: Path) -> int:
    try:
        return int(read_checkpoint_payload(path)["metadata"]["epoch"])
    except Exception:
        return 0


@pytest.mark.slow
def test_resume_after_sigkill_ends_with_the_same_weights(tmp_path):
    full, killed = tmp_path / "full", tmp_path / "killed"
    subprocess.run(_train_cmd(full), check=True, env=ENV, capture_output=True)
    proc = subprocess.Popen(
        _train_cmd(killed), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 300
    while _epoch_of(killed / "last.pt") < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "run finished before it could be killed; make it longer"
    os.kill(proc.pid, signal.SIGKILL)  # in the middle of epoch 3
    proc.wait()
    stopped_at = _epoch_of(killed / "last.pt")
    assert 2 <= stopped_at < 4
    assert not (killed / "summary.json").exists()
    done = subprocess.run(
        [SIAMNET, "train", "--resume", str(killed), "--quiet", "--json"],
        env=ENV,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["epochs_run"] == 4
    a, b = weights(full / "last.pt"), weights(killed / "last.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (killed / "metrics.csv").read_text().count("\n") == 5


@pytest.mark.slow
def test_two_process_data_parallel_training(tmp_path):
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available in this build")
    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "siamnet",
        "train",
        "--model",
        "conv4",
        "--loss",
        "bce",
        "--epochs",
        "1",
        "--steps-per-epoch",
        "10",
        "--batch-size",
        "32",
        "--device",
        "cpu",
        "--out",
        str(out),
        "--quiet",
        "--json",
    ]
    done = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["ranks_in_sync"] is True
    assert summary["images_seen"] == 2 * 10 * 64
    ckpt = load_checkpoint(out)
    assert ckpt.metadata["training_args"]["loss"] == "bce"


@pytest.mark.slow
def test_two_process_training_keeps_class_proxies_in_sync(tmp_path):
    """cosface's class proxies are trained beside the network: DDP must average them too."""
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd += ["-m", "siamnet", "train", "--model", "seed-cnn", "--loss", "cosface", "--epochs"]
    cmd += ["1", "--steps-per-epoch", "8", "--batch-size", "32", "--device", "cpu"]
    cmd += ["--out", str(out), "--quiet"]
    done = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["ranks_in_sync"] is True
    proxies = read_checkpoint_payload(out / "last.pt")["training"]["objective_parameters"]
    assert proxies["weight"].shape[0] == 6


@pytest.mark.slow
def test_two_process_training_on_pairs_inside_batches_keeps_the_head_in_sync(tmp_path):
    """``--pairs batch`` scores pairs with the head outside the model's forward pass; its
    gradients must still be averaged across ranks."""
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available in this build")
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd += ["-m", "siamnet", "train", "--preset", "fast", "--epochs", "1"]
    cmd += ["--steps-per-epoch", "8", "--device", "cpu", "--out", str(out), "--quiet"]
    done = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["ranks_in_sync"] is True
    assert summary["images_seen"] == 2 * 8 * 60  # 6 training classes × 10 examples per rank
    args = load_checkpoint(out).metadata["training_args"]
    assert (args["pairs"], args["examples_per_class"]) == ("batch", 10)


def test_cli_train_refusal_is_one_line(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    (run / "x").write_text("x")
    done = subprocess.run(
        [SIAMNET, "train", "--out", str(run), "--epochs", "1"],
        env=ENV,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and done.stderr.startswith("siamnet: error:")
    assert (run / "x").read_text() == "x"


def test_koch_preset_follows_the_paper_and_trains(tmp_path):
    """--preset koch: per-layer SGD groups, momentum rising from 0.5, 1% decay per epoch, the
    paper's initialisation, affine distortions, early stopping after 20 epochs."""
    from siamnet.train import build_optimizer, set_epoch_hyperparameters

    koch = dict(preset="koch", model=None, loss=None, batch_size=8, steps_per_epoch=2)
    cfg = small(tmp_path / "koch", epochs=2, **koch).resolved()
    assert (cfg.model, cfg.loss, cfg.optimizer, cfg.augment) == ("koch", "bce", "sgd", "affine")
    assert cfg.patience == 20 and cfg.schedule == "exp:0.99" and cfg.koch_init
    from siamnet.models.siamese import ModelSpec, build_model

    model = build_model(ModelSpec(model="koch", loss="bce", head="l1", image_size=(28, 28)))
    optimizer = build_optimizer(cfg, model)
    assert len(optimizer.param_groups) == 6  # conv1..conv4, fc 4096, the L1 head
    set_epoch_hyperparameters(cfg, optimizer, 0)
    assert all(g["momentum"] == pytest.approx(0.5) for g in optimizer.param_groups)
    set_epoch_hyperparameters(cfg, optimizer, 10)  # halfway up the 20-epoch ramp to 0.9
    assert optimizer.param_groups[0]["momentum"] == pytest.approx(0.7)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(
        optimizer.param_groups[0]["initial_lr"] * 0.99**10
    )
    summary = fit(small(tmp_path / "run", epochs=1, **koch))
    assert summary["model"] == "koch" and summary["loss"] == "bce"
    assert load_checkpoint(tmp_path / "run" / "best.pt").spec.model == "koch"
