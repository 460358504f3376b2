"""The shared model (`siamnet.sharing`): ``siamnet export --format safetensors`` writes a folder
of plain weights and a JSON description that every verb takes in place of the run folder, with
the same scores; it loads with no pickle; `save_pretrained` / `from_pretrained` / `push_to_hub`
round trip through a local folder and an offline Hugging Face cache, never the network."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from safetensors import safe_open

import siamnet
from siamnet.checkpoint import load_checkpoint
from siamnet.errors import ArgumentError, CheckpointError
from siamnet.evaluate import calibrate_checkpoint
from siamnet.export import export_model
from siamnet.serve.app import create_app
from siamnet.sharing import CONFIG_FILE, WEIGHTS_FILE, from_pretrained, save_pretrained

from helpers import DIGITS_UNSEEN, ENV, refused
from helpers import siamnet as run_siamnet


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run trained through the API on the built-in digits (6-9 held out), digit images on
    disk, and the run exported with the command."""
    root = tmp_path_factory.mktemp("sharing")
    siamnet.fit(
        data="digits",
        model="seed-cnn",
        loss="contrastive",
        eval_classes=DIGITS_UNSEEN,
        epochs=1,
        steps_per_epoch=5,
        batch_size=16,
        val_pairs=200,
        val_episodes=20,
        out=str(root / "run"),
        quiet=True,
        device="cpu",
    )
    test = siamnet.load_dataset("digits").test
    for k, (image, label) in enumerate(zip(test.images, test.labels.tolist(), strict=True)):
        if k < 60:
            folder = root / "support" / test.classes[label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image[0].numpy()).save(folder / f"{k}.png")
        elif k < 66:
            Image.fromarray(image[0].numpy()).save(root / f"q{k}.png")
    done = run_siamnet("export", "run", "--format", "safetensors", "--out", "shared", cwd=root)
    assert done.returncode == 0, done.stderr
    assert "model.safetensors" in done.stdout
    return root


def queries(root: Path) -> list[Path]:
    return sorted(root.glob("q*.png"))


def json_of(root: Path, *args: object) -> dict:
    done = run_siamnet(*args, cwd=root)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_export_is_safetensors_weights_and_the_checkpoint_metadata_as_json(root):
    ckpt = load_checkpoint(root / "run")
    shared = root / "shared"
    assert sorted(p.name for p in shared.iterdir()) == ["README.md", CONFIG_FILE, WEIGHTS_FILE]
    raw = (shared / WEIGHTS_FILE).read_bytes()
    config = json.loads((shared / CONFIG_FILE).read_text())
    assert config["format"] == "siamnet-pretrained" and config["format_version"] == 1
    assert config["weights_sha256"] == hashlib.sha256(raw).hexdigest()
    for key, value in ckpt.metadata.items():  # model, preprocessing, head, threshold, ...
        assert config[key] == value, key
    with safe_open(shared / WEIGHTS_FILE, framework="pt") as fh:  # what other tools read
        state = ckpt.model.state_dict()
        assert sorted(fh.keys()) == sorted(state)
        for name in state:
            assert torch.equal(fh.get_tensor(name), state[name])
    card = (shared / "README.md").read_text()
    assert "library_name: siamnet" in card and "seed-cnn" in card
    assert "one-shot accuracy, unseen classes" in card  # the run's final figures


def test_compare_gives_the_same_scores_from_the_export(root):
    a, b = queries(root)[:2]
    from_run = json_of(root, "compare", "run", a, b, "--json")
    assert json_of(root, "compare", "shared", a, b, "--json") == from_run
    run, shared = load_checkpoint(root / "run"), load_checkpoint(root / "shared")
    images = siamnet.load_dataset("digits").test.images[:12]
    for x, y in zip(images[:6], images[6:], strict=True):
        assert siamnet.compare(shared, x, y) == siamnet.compare(run, x, y)


def test_classify_gives_the_same_predictions_from_the_export(root):
    args = ["--support", "support", *[arg for q in queries(root) for arg in ("--query", q)]]
    from_run = json_of(root, "classify", "run", *args, "--json")
    assert len(from_run["predictions"]) == 6
    assert json_of(root, "classify", "shared", *args, "--json") == from_run


def test_evaluate_gives_the_same_report_from_the_export(root):
    args = ["--pairs", 200, "--episodes", 30, "--ways", 4, "--json", "-"]
    from_run = json_of(root, "evaluate", "run", *args)
    from_shared = json_of(root, "evaluate", "shared", *args)
    assert from_run.pop("checkpoint").endswith("best.pt")
    assert from_shared.pop("checkpoint") == "shared"
    assert from_run["evaluation_data"]["unseen_classes"]  # 6-9, from the training arguments
    assert from_shared == from_run


def test_the_service_answers_the_same_from_the_export(root):
    def answers(checkpoint: Path) -> list[dict]:
        app = create_app(
            checkpoint, root / "support", root / "support", allowed_hosts=["testserver"]
        )
        client = TestClient(app)
        a, b = (q.read_bytes() for q in queries(root)[:2])
        got = []
        for path, files in (
            ("/compare", {"a": ("a.png", a), "b": ("b.png", b)}),
            ("/classify", {"image": ("a.png", a)}),
            ("/search?k=3", {"image": ("b.png", b)}),
        ):
            answer = client.post(path, files=files)
            assert answer.status_code == 200, answer.text
            got.append(answer.json())
        info = client.get("/info").json()
        assert info.pop("checkpoint") == checkpoint.name
        return [*got, info]

    assert answers(root / "shared") == answers(root / "run" / "best.pt")


def test_a_gallery_built_with_the_export_is_searched_with_the_run(root):
    run, shared = load_checkpoint(root / "run"), load_checkpoint(root / "shared")
    test = siamnet.load_dataset("digits").test
    names = [test.classes[k] for k in test.labels[:40].tolist()]
    gallery = siamnet.build_gallery(
        shared, test.images[:40], names, [f"{i}.png" for i in range(40)]
    )
    gallery.check_model(run)  # the same model: the same identity
    queries = test.images[40:45]
    by_shared = siamnet.search(gallery, siamnet.embed(shared, queries), 3, head=shared.model.head)
    by_run = siamnet.search(gallery, siamnet.embed(run, queries), 3, head=run.model.head)
    assert all(torch.equal(x, y) for x, y in zip(by_shared, by_run, strict=True))


def test_calibrate_writes_the_threshold_into_config_json(root, tmp_path):
    shared, run = tmp_path / "shared", tmp_path / "run"
    shutil.copytree(root / "shared", shared)
    shutil.copytree(root / "run", run)
    weights = (shared / WEIGHTS_FILE).read_bytes()
    digits = siamnet.load_dataset("digits")
    got = calibrate_checkpoint(load_checkpoint(shared), digits, target_far=0.05, pairs=500)
    want = calibrate_checkpoint(load_checkpoint(run), digits, target_far=0.05, pairs=500)
    assert got["threshold"] == want["threshold"] and got["far"] == want["far"]
    config = json.loads((shared / CONFIG_FILE).read_text())
    assert config["threshold"] == want["threshold"]
    assert config["calibration"]["target_far"] == 0.05
    assert load_checkpoint(shared).threshold == want["threshold"]
    assert (shared / WEIGHTS_FILE).read_bytes() == weights  # untouched
    assert sorted(p.name for p in shared.iterdir()) == ["README.md", CONFIG_FILE, WEIGHTS_FILE]


def test_the_export_exports_to_torchscript_but_never_over_its_own_files(root, tmp_path):
    shared = load_checkpoint(root / "shared")
    result = export_model(shared, "torchscript", tmp_path / "model.pt")
    assert result.embedding_max_abs_diff <= 1e-4
    info = json.loads((tmp_path / "model.json").read_text())
    assert info["checkpoint"] == str(root / "shared")
    copy = load_checkpoint(shutil.copytree(root / "shared", tmp_path / "copy"))
    with pytest.raises(ArgumentError, match="the checkpoint being exported"):
        export_model(copy, "torchscript", tmp_path / "copy" / WEIGHTS_FILE, overwrite=True)


#: Run in a fresh interpreter where unpickling anything raises: the export loads and scores.
NO_PICKLE = """
import pickle, sys, torch
import siamnet

def refuse(*args, **kwargs):
    raise AssertionError("unpickling was attempted")

class Refused(pickle.Unpickler):
    def __init__(self, *args, **kwargs):
        refuse()

torch.load = pickle.load = pickle.loads = refuse
pickle.Unpickler = Refused
model = siamnet.load_checkpoint(sys.argv[1])
images = torch.zeros(2, 1, 28, 28, dtype=torch.uint8)
images[1, :, 10:18, 10:18] = 255
print(siamnet.compare(model, images[0], images[1]).score)
try:
    siamnet.load_checkpoint(sys.argv[2])
except siamnet.SiamnetError as exc:
    print("refused" if "unpickling was attempted" in str(exc) else exc)
"""


def test_loading_the_export_never_unpickles(root):
    done = subprocess.run(
        [sys.executable, "-c", NO_PICKLE, str(root / "shared"), str(root / "run")],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    score, refusal = done.stdout.split("\n")[:2]
    float(score)
    assert refusal == "refused"  # the run folder's checkpoint does unpickle


def test_save_pretrained_and_from_pretrained_round_trip_through_a_folder(root, tmp_path):
    ckpt = load_checkpoint(root / "run")
    result = siamnet.save_pretrained(ckpt, tmp_path / "model")
    assert (
        result.weights_sha256
        == json.loads((root / "shared" / CONFIG_FILE).read_text())["weights_sha256"]
    )
    loaded = siamnet.from_pretrained(tmp_path / "model")
    assert loaded.metadata == ckpt.metadata and loaded.path == tmp_path / "model"
    images = siamnet.load_dataset("digits").test.images[:8]
    assert torch.equal(siamnet.embed(loaded, images), siamnet.embed(ckpt, images))
    for entry in ("model.safetensors", "config.json"):  # either file names the model too
        assert load_checkpoint(tmp_path / "model" / entry).path == tmp_path / "model"
    with pytest.raises(ArgumentError, match="already exists; pass overwrite=True"):
        save_pretrained(ckpt, tmp_path / "model")
    (tmp_path / "model" / ".gitattributes").write_text("*.safetensors filter=lfs\n")
    save_pretrained(root / "run", tmp_path / "model", overwrite=True)
    assert (tmp_path / "model" / ".gitattributes").exists()  # other files are kept
    with pytest.raises(ArgumentError, match="holds .*the checkpoint being exported"):
        save_pretrained(root / "run", root / "run", overwrite=True)
    shutil.copy(root / "run" / "last.pt", tmp_path / "model")
    with pytest.raises(ArgumentError, match="a run folder .last.pt is in it"):
        save_pretrained(ckpt, tmp_path / "model", overwrite=True)


def test_a_damaged_or_mismatched_export_is_refused_in_one_line(root, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(root / "shared", bad)
    config = json.loads((bad / CONFIG_FILE).read_text())
    (bad / CONFIG_FILE).write_text(json.dumps({**config, "threshold": "high"}))
    refused(run_siamnet("compare", bad, *queries(root)[:2]), "field threshold: expected")
    (bad / CONFIG_FILE).write_text(json.dumps({**config, "weights_sha256": "0" * 64}))
    with pytest.raises(CheckpointError, match="does not belong with config.json"):
        load_checkpoint(bad)
    (bad / CONFIG_FILE).write_text("{")
    with pytest.raises(CheckpointError, match="not JSON"):
        load_checkpoint(bad)
    (bad / CONFIG_FILE).write_text(
        json.dumps({k: v for k, v in config.items() if k != "weights_sha256"})
    )
    (bad / WEIGHTS_FILE).write_bytes(b"\x10" + b"\x00" * 7 + b"{not a header")
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        load_checkpoint(bad)
    (bad / WEIGHTS_FILE).unlink()
    with pytest.raises(CheckpointError, match="model.safetensors is missing"):
        load_checkpoint(bad)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="nor config.json and model.safetensors"):
        load_checkpoint(empty)


def test_an_existing_folder_is_replaced_only_with_overwrite(root, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    export = ("export", root / "run", "--format", "safetensors", "--out", out)
    refused(run_siamnet(*export), "already exists; pass --overwrite")
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    done = run_siamnet(*export, "--overwrite", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["weights_file"] == str(out / WEIGHTS_FILE)
    assert (out / "notes.txt").read_text() == "mine"


# --- the Hugging Face Hub, offline ------------------------------------------------------------


class FakeHub:
    """`huggingface_hub.HfApi` that 'uploads' into a local Hub cache, as a download would
    leave it (``models--OWNER--NAME/refs/main`` and ``snapshots/REVISION/``)."""

    cache: Path

    def __init__(self, token=None):
        self.token = token

    def create_repo(self, repo_id, private=None, exist_ok=False):
        return f"https://example.invalid/{repo_id}"

    def upload_folder(self, repo_id, folder_path, commit_message, allow_patterns):
        revision = "0123456789abcdef0123456789abcdef01234567"
        repo = self.cache / f"models--{repo_id.replace('/', '--')}"
        shutil.copytree(folder_path, repo / "snapshots" / revision)
        (repo / "refs").mkdir(parents=True)
        (repo / "refs" / "main").write_text(revision)
        return f"commit {revision} of {repo_id}: {commit_message}"


OFFLINE_LOAD = """
import sys, torch, siamnet
model = siamnet.from_pretrained(sys.argv[1], cache_dir=sys.argv[2])
print(model.path.parent.name, siamnet.embed(model, torch.zeros(1, 1, 28, 28)).sum().item())
try:
    siamnet.from_pretrained("someone/missing", cache_dir=sys.argv[2])
except siamnet.SiamnetError as exc:
    print(exc)
"""


def test_push_to_hub_and_from_pretrained_round_trip_through_an_offline_cache(
    root, tmp_path, monkeypatch
):
    import huggingface_hub

    FakeHub.cache = tmp_path / "hub"
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHub)
    commit = siamnet.push_to_hub(root / "run", "someone/digits", commit_message="first")
    assert commit.startswith("commit 0123") and commit.endswith("someone/digits: first")
    done = subprocess.run(
        [sys.executable, "-c", OFFLINE_LOAD, "someone/digits", str(FakeHub.cache)],
        capture_output=True,
        text=True,
        env={**ENV, "HF_HUB_OFFLINE": "1"},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    total = siamnet.embed(load_checkpoint(root / "run"), torch.zeros(1, 1, 28, 28)).sum().item()
    assert lines[0] == f"snapshots {total}"
    assert lines[1].startswith("someone/missing: no such folder")
    assert "not in the local cache" in lines[1] and len(lines) == 2


def test_without_huggingface_hub_a_hub_id_is_one_clear_line(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ArgumentError) as caught:
        from_pretrained("someone/digits")
    assert str(caught.value) == (
        "someone/digits: no such folder; loading it from the Hugging Face Hub needs "
        "huggingface_hub (not installed): pip install 'siamnet[hub]'"
    )
