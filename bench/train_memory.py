"""Peak memory of training on 60,000 28×28 images: siamnet against the blog post's code, each
in a fresh process, in one run (peak resident set size, ru_maxrss).

Both read the same 60,000-row MNIST-format CSV (Fashion-MNIST's training set when Debian's
``dataset-fashion-mnist`` is installed, generated images otherwise) and train 50 batches of 100
pairs. The post's code is its own: pandas.read_csv, per-class arrays, float64 pair batches.
pandas is needed for the baseline only (``pip install pandas``).

    python bench/train_memory.py [--rounds 3]

Each side runs `--rounds` times (alternating); the table gives the median and the range, since
the peak of the same code moves by tens of MB from run to run.
"""

from __future__ import annotations

import argparse
import gzip
import statistics
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

from results import machine, table, write_section

DATA_DIR = Path(__file__).with_name(".data")
FASHION = Path("/usr/share/datasets/fashion-mnist")

POST_CODE = textwrap.dedent(
    """
    import sys, resource
    import numpy as np, pandas as pd, torch, torch.nn as nn, torch.nn.functional as F
    import torch.optim as optim
    rng = np.random
    class CNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 32, 3); self.pool = nn.MaxPool2d(2)
            self.conv2 = nn.Conv2d(32, 64, 3)
            self.fc1 = nn.Linear(64 * 5 * 5, 120); self.fc2 = nn.Linear(120, 84)
        def forward(self, x):
            x = self.pool(F.relu(self.conv1(x))); x = self.pool(F.relu(self.conv2(x)))
            x = x.reshape(-1, 64 * 5 * 5); x = F.relu(self.fc1(x)); return self.fc2(x)
    class SiameseNet(nn.Module):
        def __init__(self):
            super().__init__(); self.net = CNN(); self.fc1 = nn.Linear(84, 1)
        def forward(self, l, r):
            return torch.sigmoid(self.fc1(torch.abs(self.net(l) - self.net(r))))
    df = pd.read_csv(sys.argv[1], header=None)
    labels = df[0]; mnist_df = df.drop(0, axis=1); n, _ = mnist_df.shape
    mnist = mnist_df.values.reshape((n, 28, 28)); classes = np.unique(labels)
    per_class = [mnist[labels == c] for c in classes]; k = len(classes)
    def get_batch(batch_size):
        categories = rng.choice(k, size=(batch_size,), replace=True)
        pairs = [np.zeros((batch_size, 28, 28, 1)) for i in range(2)]
        targets = np.zeros((batch_size,)); targets[batch_size // 2:] = 1
        for i in range(batch_size):
            c = categories[i]; i1 = rng.randint(0, len(per_class[c]))
            pairs[0][i, :, :, :] = per_class[c][i1].reshape(28, 28, 1)
            c2 = c if i >= batch_size // 2 else (c + rng.randint(1, k)) % k
            i2 = rng.randint(0, len(per_class[c2]))
            pairs[1][i, :, :, :] = per_class[c2][i2].reshape(28, 28, 1)
        return pairs, targets
    net = SiameseNet(); opt = optim.SGD(net.parameters(), lr=0.001, momentum=0.1)
    crit = nn.BCELoss()
    for step in range(50):
        (l, r), t = get_batch(100)
        l = torch.from_numpy(l).float().permute(0, 3, 1, 2)
        r = torch.from_numpy(r).float().permute(0, 3, 1, 2)
        t = torch.from_numpy(t).float()
        opt.zero_grad(); loss = crit(net(l, r), t.view(-1, 1)); loss.backward(); opt.step()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    """
)

SIAMNET_CODE = textwrap.dedent(
    """
    import os, sys, resource, tempfile
    os.environ["SIAMNET_NO_TENSORBOARD"] = "1"
    from siamnet.train import TrainConfig, fit
    with tempfile.TemporaryDirectory() as tmp:
        fit(TrainConfig(data=sys.argv[1], preset="seed", epochs=1, steps_per_epoch=50,
                        log_every=0, out=tmp + "/run", quiet=True, device="cpu"))
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    """
)


def read_idx(path: Path) -> np.ndarray:
    raw = gzip.open(path).read()
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(raw[3])]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * raw[3]).reshape(dims)


def make_csv() -> tuple[Path, str]:
    DATA_DIR.mkdir(exist_ok=True)
    if (FASHION / "train-images-idx3-ubyte.gz").exists():
        path, what = DATA_DIR / "fashion_train.csv", "Fashion-MNIST training set"
        if not path.exists():
            images = read_idx(FASHION / "train-images-idx3-ubyte.gz").reshape(60000, -1)
            labels = read_idx(FASHION / "train-labels-idx1-ubyte.gz")
            rows = np.concatenate([labels[:, None], images], axis=1)
            np.savetxt(path, rows, fmt="%d", delimiter=",")
        return path, what
    path, what = DATA_DIR / "generated_train.csv", "generated images"
    if not path.exists():
        rng = np.random.default_rng(0)
        rows = np.concatenate(
            [rng.integers(0, 10, (60000, 1)), rng.integers(0, 256, (60000, 784))], axis=1
        )
        np.savetxt(path, rows, fmt="%d", delimiter=",")
    return path, what


def peak_mb(code: str, csv_path: Path) -> float:
    done = subprocess.run(
        [sys.executable, "-c", code, str(csv_path)], capture_output=True, text=True, check=True
    )
    return int(done.stdout.strip().splitlines()[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="runs of each side")
    args = parser.parse_args()
    csv_path, what = make_csv()
    try:
        import pandas  # noqa: F401

        has_pandas = True
    except ImportError:
        has_pandas = False
        print("pandas is missing: pip install pandas to measure the post's code")
    ours: list[float] = []
    post: list[float] = []
    for _ in range(args.rounds):
        ours.append(peak_mb(SIAMNET_CODE, csv_path))
        if has_pandas:
            post.append(peak_mb(POST_CODE, csv_path))

    def cells(peaks: list[float]) -> list[str]:
        if not peaks:
            return ["-", "-"]
        return [f"{statistics.median(peaks):,.0f}", f"{min(peaks):,.0f} - {max(peaks):,.0f}"]

    rows = [
        ["siamnet (`--preset seed`, 50 batches)", *cells(ours)],
        ["the post's code (pandas, float64 batches, 50 batches)", *cells(post)],
    ]
    print(rows)
    ratio = statistics.median(post) / statistics.median(ours) if post else float("nan")
    body = (
        f"Peak resident memory (MB) of a fresh process that loads a 60,000-row MNIST-format CSV "
        f"({what}) and trains 50 batches of 100 pairs; {args.rounds} runs of each, alternating. "
        f"Target: siamnet under 600 MB. Ratio of medians: the post's code takes {ratio:.1f}× "
        f"siamnet's peak. Measured on {machine()}."
        "\n\n"
        + table(["what", "median peak RSS MB", f"range over {args.rounds} runs"], rows)
        + "\n\nReproduce: `python bench/train_memory.py`"
    )
    write_section("Training memory", body)


if __name__ == "__main__":
    main()
