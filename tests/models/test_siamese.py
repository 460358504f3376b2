"""The twin network: each objective's head, pair scores, and a user's own backbone trained
through `SiameseNet`."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from siamnet.errors import ArgumentError
from siamnet.models import ModelSpec, SiameseNet, build_head, build_model
from siamnet.models.losses import bce_loss, contrastive_loss


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize(
    "loss, head",
    [("bce", "l1"), ("contrastive", "euclidean"), ("triplet", "euclidean"), ("proto", "euclidean")],
)
def test_each_loss_builds_its_head_and_pairs_score_per_pair(loss, head):
    model = build_model(ModelSpec(model="seed-cnn", loss=loss, head=head))
    assert model.head.kind == head
    a = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    b = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    model.eval()
    assert model(a).shape == (4, 84)  # embeddings when b is omitted
    raw = model(a, b)
    assert raw.shape == (4,)
    score = model.score(a, b)
    if head == "l1":
        assert ((score > 0) & (score < 1)).all()
        assert torch.allclose(score, torch.sigmoid(raw))
    else:
        assert (score <= 0).all() and torch.allclose(score, raw)
        assert model.score(a, a).abs().max() < 1e-3  # an image is at distance 0 from itself


# --- a user's own backbone -----------------------------------------------------------------------


class TinyNet(nn.Module):
    """A backbone the library does not know: flatten and project."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(12 * 12, 8), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@pytest.mark.parametrize("kind", ["l1", "euclidean"])
def test_a_user_supplied_module_trains_through_siamese_net(kind):
    model = SiameseNet(TinyNet(), build_head(kind, 8))
    a = torch.randint(0, 256, (16, 1, 12, 12), dtype=torch.uint8)
    b = torch.randint(0, 256, (16, 1, 12, 12), dtype=torch.uint8)
    target = (torch.arange(16) % 2).float()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(5):
        if kind == "l1":
            loss = bce_loss(model(a, b), target)
        else:
            e = model.embed(torch.cat([a, b]))
            loss = contrastive_loss(e[:16], e[16:], target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    after = model.state_dict()
    assert not torch.equal(before["backbone.net.1.weight"], after["backbone.net.1.weight"])
    if kind == "l1":
        assert not torch.equal(before["head.fc.weight"], after["head.fc.weight"])
    assert losses[-1] < losses[0], losses
    assert model.embed(a).shape == (16, 8)
    assert model.score(a, b).shape == (16,)


def test_unwrap_removes_compile_and_data_parallel_wrappers_in_either_order():
    from torch import nn

    from siamnet.models.siamese import unwrap

    net = build_model(ModelSpec(model="seed-cnn", loss="bce", head="l1"))

    class Wrapper(nn.Module):  # holds the wrapped module as DDP (module) or compile (_orig_mod)
        def __init__(self, attribute: str, inner: nn.Module) -> None:
            super().__init__()
            setattr(self, attribute, inner)

    assert unwrap(net) is net
    assert unwrap(Wrapper("module", Wrapper("_orig_mod", net))) is net
    assert unwrap(Wrapper("_orig_mod", Wrapper("module", net))) is net


def test_a_spec_without_resize_or_centring_keeps_the_old_behaviour():
    old = ModelSpec(model="conv4", loss="contrastive").to_dict()
    del old["resize"], old["centring"]
    spec = ModelSpec.from_dict(old)
    assert (spec.resize, spec.centring) == ("stretch", "none")
    assert ModelSpec().resize == "crop"  # what a model built now records
    model = build_model(spec)
    assert model.embedding_mean is None and "embedding_mean" not in model.state_dict()


def test_the_mean_embedding_is_a_buffer_saved_with_the_weights():
    spec = ModelSpec(model="seed-cnn", loss="contrastive", centring="on", embedding_norm=True)
    model = build_model(spec).eval()
    assert model.centring and model.state_dict()["embedding_mean"].shape == (84,)
    mean = torch.randn(84)
    model.set_embedding_mean(mean)
    x = torch.randint(0, 256, (3, 1, 28, 28), dtype=torch.uint8)
    raw = nn.functional.normalize(model.backbone(model.normalizer(x)), dim=-1)
    with torch.no_grad():
        assert torch.allclose(model.embed(x), nn.functional.normalize(raw - mean, dim=-1))
    again = build_model(spec)
    again.load_state_dict(model.state_dict())
    assert torch.equal(again.embedding_mean, mean)
    model.set_embedding_mean(None)
    assert model.embedding_mean is None and not model.centring


@pytest.mark.parametrize("field", ["resize", "centring"])
def test_an_unknown_resize_or_centring_is_refused(field):
    with pytest.raises(ArgumentError, match=rf"{field} 'sideways': expected one of"):
        ModelSpec(**{field: "sideways"})
