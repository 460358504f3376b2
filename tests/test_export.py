"""Export to TorchScript and ONNX: the files, the parity check, refusals, and the three files
written as one output (sha256 in the description, old files kept on a full disk)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

from siamnet.checkpoint import load_checkpoint
from siamnet.errors import ArgumentError, SiamnetError
from siamnet.export import export_model, export_paths, verify_export
from siamnet.infer import compare

from helpers import SIAMNET, limit_file_size
from shapes_model import SHAPES, draw_shapes, write_checkpoint

try:
    import onnxruntime

    HAVE_ONNX = True
except ImportError:
    HAVE_ONNX = False
needs_onnx = pytest.mark.skipif(
    not HAVE_ONNX, reason="onnx/onnxscript/onnxruntime not installed (onnx extra)"
)


@pytest.fixture(scope="session", params=["contrastive", "bce"])
def ckpt(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(f"export-{request.param}") / "shapes.pt"
    return load_checkpoint(write_checkpoint(path, request.param))


def images(n: int, seed: int) -> torch.Tensor:
    return draw_shapes(torch.arange(n) % len(SHAPES), seed=seed).float()


def within_tolerance(result, ckpt) -> bool:
    """The export's own rule: ``|exported - pytorch| <= 1e-5 + 1e-5·|pytorch|``."""
    with torch.no_grad():
        scale = float(ckpt.model.embed(images(4, seed=0)).abs().max())
    return (
        result.tolerance == 1e-5
        and result.embedding_max_abs_diff <= 1e-5 * (1 + scale)
        and result.score_max_abs_diff <= 2e-5
    )


def load_torchscript(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is deprecated upstream
        return torch.jit.load(str(path))


def check_outputs(ckpt, run_embed, run_head):
    """Exported embeddings and scores of real images match PyTorch's and `compare`."""
    for n in (1, 7):  # the batch axis is free
        x = images(n, seed=n)
        with torch.no_grad():
            want = ckpt.model.embed(x)
        torch.testing.assert_close(run_embed(x), want, rtol=1e-5, atol=1e-5)
    a, b = images(2, seed=3)
    embeddings = run_embed(torch.stack([a, b]))
    score = float(run_head(embeddings[:1], embeddings[1:])[0])
    assert score == pytest.approx(
        compare(ckpt, a.to(torch.uint8), b.to(torch.uint8)).score, abs=1e-5
    )


def test_torchscript_export(ckpt, tmp_path):
    result = export_model(ckpt, "torchscript", tmp_path / "model.pt")
    assert result.embedding_file == str(tmp_path / "model.pt")
    assert result.head_file == str(tmp_path / "model.head.pt")
    assert within_tolerance(result, ckpt)
    embed = load_torchscript(result.embedding_file)
    head = load_torchscript(result.head_file)
    with torch.no_grad():
        check_outputs(ckpt, embed, head)
    info = json.loads((tmp_path / "model.json").read_text())
    assert info["head"] == ckpt.spec.head and info["threshold"] == ckpt.threshold
    assert info["classes"] == list(SHAPES) and info["embedding_dim"] == 84
    assert info["input"]["shape"] == ["batch", 1, 28, 28]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.head.pt", "model.json", "model.pt"]


@needs_onnx
@pytest.mark.slow
def test_onnx_export(ckpt, tmp_path):
    result = export_model(ckpt, "onnx", tmp_path / "model.onnx")
    assert within_tolerance(result, ckpt)
    embed = onnxruntime.InferenceSession(result.embedding_file, providers=["CPUExecutionProvider"])
    head = onnxruntime.InferenceSession(result.head_file, providers=["CPUExecutionProvider"])
    assert [i.name for i in embed.get_inputs()] == ["images"]
    assert [i.name for i in head.get_inputs()] == ["a", "b"]

    def run_embed(x):
        return torch.from_numpy(embed.run(None, {"images": x.numpy()})[0])

    def run_head(a, b):
        return torch.from_numpy(head.run(None, {"a": a.numpy(), "b": b.numpy()})[0])

    check_outputs(ckpt, run_embed, run_head)


def test_existing_files_are_kept_without_overwrite(ckpt, tmp_path):
    target = tmp_path / "model.pt"
    target.write_text("precious")
    with pytest.raises(ArgumentError, match="already exists"):
        export_model(ckpt, "torchscript", target)
    assert target.read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]
    export_model(ckpt, "torchscript", target, overwrite=True)
    assert load_torchscript(target) is not None


def test_unknown_format_is_refused(ckpt, tmp_path):
    with pytest.raises(ArgumentError, match="--format 'tflite'"):
        export_model(ckpt, "tflite", tmp_path / "m")


def test_missing_onnx_runtime_is_a_clear_error(ckpt, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now fails
    with pytest.raises(ArgumentError, match=r"onnxruntime.*pip install 'siamnet\[onnx\]'"):
        export_model(ckpt, "onnx", tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_export_paths():
    assert export_paths("out/m.onnx", "onnx") == (
        Path("out/m.onnx"),
        Path("out/m.head.onnx"),
        Path("out/m.json"),
    )
    assert export_paths("out/m", "torchscript") == (
        Path("out/m.pt"),
        Path("out/m.head.pt"),
        Path("out/m.json"),
    )


def test_the_name_given_is_written_as_given():
    assert export_paths("R/best.ts.pt", "torchscript") == (
        Path("R/best.ts.pt"),
        Path("R/best.ts.head.pt"),
        Path("R/best.ts.json"),
    )
    assert export_paths("m.v2.onnx", "onnx") == (
        Path("m.v2.onnx"),
        Path("m.v2.head.onnx"),
        Path("m.v2.json"),
    )
    assert export_paths("out/m.pth", "torchscript")[0] == Path("out/m.pth")


def test_export_never_replaces_its_own_checkpoint(ckpt_file, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(ckpt_file, run / "best.pt")
    original = (run / "best.pt").read_bytes()
    source = load_checkpoint(run)
    with pytest.raises(ArgumentError, match=r"best\.pt, the checkpoint being exported"):
        export_model(source, "torchscript", run / "best.pt", overwrite=True)
    with pytest.raises(ArgumentError, match=r"best\.pt, the checkpoint being exported"):
        export_model(source, "torchscript", run / "best", overwrite=True)  # best -> best.pt
    assert sorted(p.name for p in run.iterdir()) == ["best.pt"]
    result = export_model(source, "torchscript", run / "best.ts.pt", overwrite=True)
    assert result.embedding_file == str(run / "best.ts.pt")
    assert (run / "best.pt").read_bytes() == original
    names = sorted(p.name for p in run.iterdir())
    assert names == ["best.pt", "best.ts.head.pt", "best.ts.json", "best.ts.pt"]


def test_an_output_naming_one_file_twice_is_refused(ckpt, tmp_path):
    with pytest.raises(ArgumentError, match="would both be"):
        export_model(ckpt, "onnx", tmp_path / "m.json")
    assert list(tmp_path.iterdir()) == []


def test_an_unusable_output_path_is_refused_before_any_work(ckpt, tmp_path):
    (tmp_path / "FILE").write_text("x")
    (tmp_path / "folder.pt").mkdir()
    with pytest.raises(ArgumentError, match="FILE is a file, not a folder"):
        export_model(ckpt, "torchscript", tmp_path / "FILE" / "m.pt")
    with pytest.raises(ArgumentError, match="is a folder; expected a file name"):
        export_model(ckpt, "torchscript", tmp_path / "folder.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["FILE", "folder.pt"]


# --- the three files are one output ------------------------------------------------------------


@pytest.fixture(scope="module")
def ckpt_file(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("export-file") / "shapes.pt", "contrastive")


def contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_the_description_records_the_sha256_of_both_networks(ckpt, tmp_path):
    export_model(ckpt, "torchscript", tmp_path / "model.pt")
    info = verify_export(tmp_path / "model.json")
    assert info["sha256"] == {
        name: hashlib.sha256((tmp_path / name).read_bytes()).hexdigest()
        for name in ("model.pt", "model.head.pt")
    }
    (tmp_path / "model.head.pt").write_bytes(b"another export's head")
    with pytest.raises(SiamnetError, match=r"model\.head\.pt: does not match model\.json"):
        verify_export(tmp_path / "model.json")
    (tmp_path / "model.json").unlink()
    with pytest.raises(SiamnetError, match="missing; the export is incomplete"):
        verify_export(tmp_path / "model.json")


def test_stale_temporaries_beside_an_export_are_removed(ckpt, tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    dead = tmp_path / f".model.pt.siamnet-{child.pid}-abcdefgh.tmp"
    other = tmp_path / ".notes.txt.abcdefgh.tmp"  # not a name this export writes
    two_hours_ago = time.time() - 7200
    for f in (dead, other):
        f.write_bytes(b"partial")
        os.utime(f, (two_hours_ago, two_hours_ago))
    export_model(ckpt, "torchscript", tmp_path / "model.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".notes.txt.abcdefgh.tmp",
        "model.head.pt",
        "model.json",
        "model.pt",
    ]


def test_an_export_is_written_with_the_umask(ckpt, tmp_path):
    old = os.umask(0o077)
    try:
        export_model(ckpt, "torchscript", tmp_path / "model.pt")
    finally:
        os.umask(old)
    assert {stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()} == {0o600}


@pytest.mark.slow
def test_a_full_disk_during_export_overwrite_keeps_every_old_file(ckpt_file, tmp_path):
    out = tmp_path / "out"
    export_model(load_checkpoint(ckpt_file), "torchscript", out / "m.pt")
    before = contents(out)
    result = subprocess.run(
        [SIAMNET, "export", str(ckpt_file), "--format", "torchscript", "--out", str(out / "m.pt")]
        + ["--overwrite"],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=limit_file_size(len(before["m.pt"]) // 4),
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == (
        f"siamnet: error: no space left writing {out / 'm.pt'} (the file size limit was "
        "reached); nothing was replaced: free some space and run again"
    )
    assert contents(out) == before


@pytest.mark.slow
def test_an_export_killed_while_renaming_leaves_no_description_of_other_files(ckpt_file, tmp_path):
    out = tmp_path / "out"
    export_model(load_checkpoint(ckpt_file), "torchscript", out / "m.pt")
    code = f"""
import os, signal
real = os.replace
def replace(src, dst):
    if str(dst).endswith("m.head.pt"):
        os.kill(os.getpid(), signal.SIGKILL)
    real(src, dst)
os.replace = replace
from siamnet.checkpoint import load_checkpoint
from siamnet.export import export_model
export_model(load_checkpoint({str(ckpt_file)!r}), "torchscript", {str(out / "m.pt")!r},
             seed=1, overwrite=True)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=300)
    assert result.returncode == -9, result.stderr
    with pytest.raises(SiamnetError, match="m.json: missing; the export is incomplete"):
        verify_export(out / "m.json")
    export_model(load_checkpoint(ckpt_file), "torchscript", out / "m.pt", overwrite=True)
    assert verify_export(out / "m.json")["head_file"] == "m.head.pt"
    assert sorted(p.name for p in out.iterdir()) == ["m.head.pt", "m.json", "m.pt"]
