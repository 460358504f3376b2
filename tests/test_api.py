"""The Python API at ``siamnet.*``, used as a notebook would: only ``import siamnet``, arrays
in memory, one's own ``nn.Module`` as backbone; train, evaluate, embed, compare, classify and
search a gallery; its checkpoint says clearly what it needs to load elsewhere."""

from __future__ import annotations

import subprocess
import sys

import siamnet

from helpers import ENV

NOTEBOOK = """
import sys
import numpy as np
import torch
from torch import nn
import siamnet


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
        )

    def forward(self, x):
        return self.features(x)


rng = np.random.default_rng(0)
centres = rng.integers(0, 256, (8, 28, 28))
labels = np.repeat(np.arange(8), 20)
images = np.clip(centres[labels] + rng.normal(0, 30, (160, 28, 28)), 0, 255).astype(np.uint8)
run = sys.argv[1]
summary = siamnet.fit(
    data=(images[labels < 6], labels[labels < 6]),
    test_data=(images[labels >= 6], labels[labels >= 6] + 100),
    model=TinyNet(), loss="contrastive", epochs=2, steps_per_epoch=20, batch_size=32,
    val_pairs=100, val_episodes=20, out=run, quiet=True,
)
assert summary["unseen_classes"] == ["106", "107"], summary.get("unseen_classes")
model = siamnet.load_checkpoint(run)
assert model.spec.model == "__main__:TinyNet", model.spec.model
vectors = siamnet.embed(model, images[:4])
assert vectors.shape == (4, 64), vectors.shape
same = siamnet.compare(model, torch.from_numpy(images[:1]), torch.from_numpy(images[1:2]))
unseen = siamnet.as_dataset((images[labels >= 6], labels[labels >= 6] + 100))
report = siamnet.evaluate_checkpoint(model, unseen, episodes=50, pairs=200).report
support = siamnet.build_support(
    model, torch.from_numpy(images[::20, None]), torch.arange(8), [str(c) for c in range(8)]
)
predicted = siamnet.classify(model, support, torch.from_numpy(images[5::20, None]))
gallery = siamnet.build_gallery(
    model, torch.from_numpy(images[:, None]), [str(c) for c in labels],
    [f"{i}.png" for i in range(160)],
)
index, scores = siamnet.search(gallery, siamnet.embed(model, images[:3]), top_k=1,
                               head=model.model.head)
right = sum(p.label == str(c) for p, c in zip(predicted, range(8)))
print("ok", report["one_shot"][0]["accuracy"], right, index[:, 0].tolist())
"""

ELSEWHERE = """
import sys, siamnet
try:
    siamnet.load_checkpoint(sys.argv[1])
except siamnet.SiamnetError as exc:
    print(exc)
"""


def python(code: str, *args: object) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )


def test_a_notebook_trains_its_own_module_on_arrays_and_uses_the_model(tmp_path):
    done = python(NOTEBOOK, tmp_path / "run")
    assert done.returncode == 0, done.stderr
    word, accuracy, right, nearest = done.stdout.strip().split(maxsplit=3)
    assert word == "ok" and 0.0 <= float(accuracy) <= 1.0
    assert int(right) >= 6  # 8 well-separated classes, a query each
    assert nearest == "[0, 1, 2]"  # each image finds itself in the gallery
    # elsewhere, without the class, the checkpoint says what it needs
    message = python(ELSEWHERE, tmp_path / "run").stdout
    assert "__main__:TinyNet" in message and "register_backbone" in message


def test_import_siamnet_is_light_and_names_its_api():
    done = python("import sys, siamnet; print('torch' in sys.modules)")
    assert done.stdout.strip() == "False"
    for name in ("fit", "TrainConfig", "load_checkpoint", "embed", "compare", "Gallery"):
        assert name in dir(siamnet) and getattr(siamnet, name) is not None
