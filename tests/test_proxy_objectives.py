"""Proxy objectives (normsoftmax, cosface, arcface): the loss against values computed by hand,
training that lowers it, class proxies resumed bit-exact from last.pt and never part of the
model, and a trained checkpoint used by the inference verbs as any other."""

from __future__ import annotations

import math

import pytest
import torch

from siamnet.checkpoint import load_checkpoint, read_checkpoint_payload
from siamnet.evaluate import evaluate_checkpoint
from siamnet.infer import compare
from siamnet.models.losses import proxy_softmax_loss
from siamnet.objectives import OBJECTIVES
from siamnet.train import TrainConfig, fit


def by_hand(emb, proxies, labels, scale, margin, kind):
    """Cross-entropy computed with math, one row at a time."""
    total = 0.0
    for e, y in zip(emb.tolist(), labels.tolist(), strict=True):
        ne = math.hypot(*e)
        logits = []
        for k, p in enumerate(proxies.tolist()):
            cos = (e[0] * p[0] + e[1] * p[1]) / (ne * math.hypot(*p))
            if k == y and kind == "cosine":
                cos -= margin
            elif k == y and kind == "angular":
                cos = math.cos(math.acos(cos) + margin)
            logits.append(scale * cos)
        top = max(logits)
        total += -(logits[y] - top - math.log(sum(math.exp(v - top) for v in logits)))
    return total / len(labels)


@pytest.mark.parametrize(
    "kind,margin", [("none", 0.0), ("cosine", 0.35), ("angular", 0.5), ("cosine", 0.1)]
)
def test_the_loss_matches_a_hand_computation(kind, margin):
    emb = torch.tensor([[1.0, 0.0], [0.6, 0.8], [-1.0, 2.0]])
    proxies = torch.tensor([[2.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])
    labels = torch.tensor([0, 1, 2])
    loss, cos = proxy_softmax_loss(emb, proxies, labels, 16.0, margin, kind)
    assert loss.item() == pytest.approx(by_hand(emb, proxies, labels, 16.0, margin, kind), 1e-5)
    assert cos[0, 0].item() == pytest.approx(1.0) and cos.shape == (3, 3)


def test_the_objectives_defaults():
    assert [OBJECTIVES[n].default_margin for n in ("cosface", "arcface")] == [0.35, 0.5]
    for name in ("normsoftmax", "cosface", "arcface"):
        objective = OBJECTIVES[name]
        assert objective.head == "cosine" and objective.embedding_norm
        cfg = TrainConfig(loss=name).resolved()
        assert cfg.scale == 16.0 and cfg.proxy_lr == pytest.approx(10 * cfg.lr)


def small(out, **kw) -> TrainConfig:
    values = dict(
        model="seed-cnn",
        loss="cosface",
        epochs=2,
        steps_per_epoch=8,
        batch_size=32,
        val_pairs=200,
        val_episodes=20,
        out=str(out),
        quiet=True,
        device="cpu",
        amp="off",
    )
    return TrainConfig(**{**values, **kw})


def test_proxies_resume_bit_exact_and_never_enter_the_model(tmp_path):
    whole = fit(small(tmp_path / "whole"))
    assert whole["epochs_run"] == 2
    fit(small(tmp_path / "split", epochs=1))
    fit(TrainConfig(resume=str(tmp_path / "split"), epochs=2, quiet=True, device="cpu"))
    a = read_checkpoint_payload(tmp_path / "whole" / "last.pt")
    b = read_checkpoint_payload(tmp_path / "split" / "last.pt")
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    proxies_a = a["training"]["objective_parameters"]["weight"]
    proxies_b = b["training"]["objective_parameters"]["weight"]
    assert proxies_a.shape == (6, 84) and torch.equal(proxies_a, proxies_b)
    best = read_checkpoint_payload(tmp_path / "whole" / "best.pt")
    assert not any("proxies" in k or "objective" in k for k in best["model"])
    rows = (tmp_path / "whole" / "metrics.csv").read_text().splitlines()[1:]
    losses = [float(r.split(",")[1]) for r in rows]
    assert losses[1] < losses[0]  # training lowers the loss


@pytest.mark.parametrize("loss", ["normsoftmax", "arcface"])
def test_a_proxy_trained_model_is_used_as_any_other(tmp_path, loss):
    fit(small(tmp_path / "run", loss=loss, epochs=1))
    ckpt = load_checkpoint(tmp_path / "run")
    assert ckpt.spec.head == "cosine" and ckpt.metadata["default_threshold"][0] == 0.0
    from siamnet.data.registry import load_dataset

    digits = load_dataset("digits")
    report = evaluate_checkpoint(ckpt, digits, pairs=200, episodes=50).report
    assert report["one_shot"][0]["accuracy"] > 1.0 / report["one_shot"][0]["ways"]
    same = compare(ckpt, digits.train.images[0], digits.train.images[0])
    assert same.score == pytest.approx(1.0, abs=1e-4) and same.same
