"""The gallery folder: build, load, add, model identity, refusals of mismatched or damaged files,
whole-folder replacement, kills and full disks, the umask."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import pickle
import shutil
import stat
import subprocess
import sys
import textwrap

import pytest
import torch

from siamnet.checkpoint import load_checkpoint, update_metadata
from siamnet.errors import CheckpointError, DataError
from siamnet.evaluate import embed_images
from siamnet.gallery import add_to_gallery, build_gallery, checkpoint_identity, load_gallery, search

from helpers import ENV, limit_file_size, one_error_line, siamnet
from shapes_model import SHAPES, draw_shapes, shape_png, shape_set, write_shape_folder


def dead_pid() -> int:
    """The process id of a process that has finished."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_build_load_and_search_real_images(ckpt, tmp_path):
    images, labels = shape_set(5, seed=101)
    names = [f"img{i}.png" for i in range(len(images))]
    built = build_gallery(ckpt, images, [SHAPES[i] for i in labels], names, tmp_path / "g")
    info = json.loads((tmp_path / "g" / "gallery.json").read_text())
    assert info["count"] == 20 and info["head"] == "euclidean" and info["dim"] == 84
    assert info["checkpoint"]["sha256"] == checkpoint_identity(ckpt)
    raw = torch.load(tmp_path / "g" / "embeddings.pt", weights_only=True)
    assert set(raw) == {"embeddings", "content"} and raw["embeddings"].shape == (20, 84)
    assert raw["content"].dtype == torch.uint8 and raw["content"].shape == (20, 16)
    loaded = load_gallery(tmp_path / "g")
    assert torch.equal(loaded.embeddings, built.embeddings) and loaded.files == names
    queries, truth = shape_set(3, seed=102)
    indices, _ = search(loaded, embed_images(ckpt.model, queries), top_k=3)
    top_labels = [loaded.labels[i] for i in indices[:, 0].tolist()]
    assert top_labels == [SHAPES[t] for t in truth.tolist()]


def test_add_embeds_only_the_new_images(ckpt, tmp_path):
    images, labels = shape_set(3, seed=111)
    build_gallery(ckpt, images, [None] * 12, [f"a{i}" for i in range(12)], tmp_path / "g")
    model = copy.deepcopy(ckpt.model)
    seen = []
    original = model.embed
    model.embed = lambda x: seen.append(len(x)) or original(x)
    fresh = ckpt.__class__(model, ckpt.metadata, None, ckpt.path)
    new_images = draw_shapes(torch.tensor([0, 1, 2]), seed=112)
    merged = add_to_gallery(
        tmp_path / "g", fresh, new_images, ["bar", "cross", "ring"], list("xyz")
    )
    assert sum(seen) == 3
    reloaded = load_gallery(tmp_path / "g")
    assert len(reloaded) == len(merged) == 15
    assert reloaded.labels[-3:] == ["bar", "cross", "ring"] and reloaded.files[-3:] == list("xyz")
    torch.testing.assert_close(reloaded.embeddings[-3:], embed_images(ckpt.model, new_images))


def test_a_different_checkpoint_is_refused_naming_both(ckpt, bce_ckpt, tmp_path):
    images, _ = shape_set(1, seed=121)
    build_gallery(ckpt, images, [None] * 4, list("abcd"), tmp_path / "g")
    with pytest.raises(CheckpointError) as err:
        add_to_gallery(tmp_path / "g", bce_ckpt, images, [None] * 4, list("efgh"))
    message = str(err.value)
    assert str(ckpt.path.resolve()) in message and str(bce_ckpt.path) in message
    assert len(load_gallery(tmp_path / "g")) == 4  # untouched


def test_identity_ignores_metadata_but_not_weights(ckpt, tmp_path):
    copy_path = tmp_path / "copy.pt"
    copy_path.write_bytes(ckpt.path.read_bytes())
    update_metadata(copy_path, {"threshold": 0.123})
    assert checkpoint_identity(load_checkpoint(copy_path)) == checkpoint_identity(ckpt)
    changed = load_checkpoint(copy_path)
    with torch.no_grad():
        next(changed.model.parameters()).view(-1)[0] += 1e-3
    assert checkpoint_identity(changed) != checkpoint_identity(ckpt)


def test_building_over_a_gallery_is_refused_without_overwrite(ckpt, tmp_path):
    images, _ = shape_set(1, seed=131)
    build_gallery(ckpt, images, [None] * 4, list("abcd"), tmp_path / "g")
    with pytest.raises(DataError, match="already there"):
        build_gallery(ckpt, images[:2], [None] * 2, list("ab"), tmp_path / "g")
    assert len(load_gallery(tmp_path / "g")) == 4
    build_gallery(ckpt, images[:2], [None] * 2, list("ab"), tmp_path / "g", overwrite=True)
    assert len(load_gallery(tmp_path / "g")) == 2


def small_gallery(ckpt, folder, seed: int = 141, per_class: int = 1):
    images, _ = shape_set(per_class, seed=seed)
    names = [f"item{i}" for i in range(len(images))]
    return build_gallery(ckpt, images, [None] * len(images), names, folder)


def test_files_that_do_not_belong_together_are_refused(ckpt, tmp_path):
    """gallery.json records the sha256 of embeddings.pt, and loading checks the count and
    size: embeddings of another write are refused, never searched."""
    small_gallery(ckpt, tmp_path / "g")
    small_gallery(ckpt, tmp_path / "other", seed=142, per_class=2)
    g = tmp_path / "g"
    shutil.copy(tmp_path / "other" / "embeddings.pt", g / "embeddings.pt")
    with pytest.raises(CheckpointError) as err:
        load_gallery(g)
    assert str(err.value).startswith(f"{g / 'embeddings.pt'}: does not belong with gallery.json")
    info = json.loads((g / "gallery.json").read_text())
    del info["embeddings_sha256"]  # a gallery of an earlier version: no checksum
    (g / "gallery.json").write_text(json.dumps(info))
    with pytest.raises(CheckpointError, match=r"expected a float32 tensor of shape \[4, 84\]"):
        load_gallery(g)


def rewrite_info(folder, **changes):
    info = json.loads((folder / "gallery.json").read_text())
    info.update(changes)
    (folder / "gallery.json").write_text(json.dumps(info))


def rewrite_embeddings(folder, payload):
    """Replace embeddings.pt with `payload`, recording its sha256 so that only its content is
    wrong."""
    torch.save(payload, folder / "embeddings.pt")
    digest = hashlib.sha256((folder / "embeddings.pt").read_bytes()).hexdigest()
    rewrite_info(folder, embeddings_sha256=digest)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"count": "many"},
            'field count: expected a whole number, 0 or more, found a string "many"',
        ),
        ({"dim": [84]}, "field dim: expected a positive whole number, found a list [84]"),
        ({"head": "manhattan"}, "field head: expected one of l1, euclidean, cosine"),
        ({"format_version": "abc"}, "field format_version: expected a whole number from 1 to 2"),
        ({"labels": "abcd"}, "field labels: expected a list of labels"),
        ({"files": [1, 2, 3, 4]}, "field files: expected a list of file names"),
        (
            {"labels": [None] * 3},
            "field labels: expected 4 entries (count is 4), found a list of 3",
        ),
        ({"checkpoint": "x.pt"}, "field checkpoint: expected an object"),
        ({"checkpoint": {"sha256": "zz"}}, "field checkpoint.sha256: expected the checkpoint"),
        ({"embeddings_sha256": 7}, "field embeddings_sha256: expected the sha256"),
    ],
)
def test_a_description_field_of_the_wrong_type_is_one_line(ckpt, tmp_path, changes, message):
    g = small_gallery(ckpt, tmp_path / "g").path
    rewrite_info(g, **changes)
    with pytest.raises(CheckpointError) as err:
        load_gallery(g)
    text = str(err.value)
    assert text.startswith(f"{g / 'gallery.json'}: ") and message in text and "\n" not in text


@pytest.mark.parametrize(
    ("payload", "found"),
    [
        (
            {"embeddings": torch.zeros(4, 84, dtype=torch.float64)},
            "a float64 tensor of shape [4, 84]",
        ),
        ({"embeddings": torch.zeros(4, 80)}, "a float32 tensor of shape [4, 80]"),
        ({"embeddings": torch.zeros(336)}, "a float32 tensor of shape [336]"),
        ({"embeddings": torch.zeros(5, 84)}, "a float32 tensor of shape [5, 84]"),
        ({"embeddings": [1.0, 2.0]}, "a list [1.0, 2.0]"),
        ({"vectors": torch.zeros(4, 84)}, "null"),
    ],
)
def test_embeddings_of_the_wrong_dtype_or_shape_are_one_line(ckpt, tmp_path, payload, found):
    g = small_gallery(ckpt, tmp_path / "g").path
    rewrite_embeddings(g, payload)
    with pytest.raises(CheckpointError) as err:
        load_gallery(g)
    text = str(err.value)
    assert text.startswith(f"{g / 'embeddings.pt'}: ") and f"found {found}" in text
    assert "\n" not in text


class _Marker:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_damaged_galleries_are_refused(ckpt, tmp_path):
    small_gallery(ckpt, tmp_path / "g", seed=151)
    g = tmp_path / "g"
    marker = tmp_path / "marker"
    (g / "embeddings.pt").write_bytes(pickle.dumps({"embeddings": _Marker(marker)}, protocol=2))
    with pytest.raises(CheckpointError, match="does not belong with gallery.json"):
        load_gallery(g)
    info = json.loads((g / "gallery.json").read_text())
    del info["embeddings_sha256"]
    (g / "gallery.json").write_text(json.dumps(info))
    with pytest.raises(CheckpointError, match="damaged gallery embeddings"):
        load_gallery(g)
    assert not marker.exists()
    (g / "embeddings.pt").unlink()
    with pytest.raises(CheckpointError, match="embeddings.pt is missing"):
        load_gallery(g)
    (g / "gallery.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not JSON"):
        load_gallery(g)
    with pytest.raises(CheckpointError, match="no gallery.json"):
        load_gallery(tmp_path)
    (g / "gallery.json").write_text(json.dumps({"format": "siamnet-gallery", "count": 9}))
    with pytest.raises(CheckpointError, match="field format_version is missing"):
        load_gallery(g)


def test_the_gallery_folder_is_replaced_as_a_whole(ckpt, tmp_path):
    root = tmp_path / "root"
    g = small_gallery(ckpt, root / "g").path
    (g / "notes.txt").write_text("kept")
    leftover = root / f".g.siamnet-{dead_pid()}-abcdefgh.new"  # a build that was killed
    leftover.mkdir()
    (leftover / "embeddings.pt").write_bytes(b"partial")
    add_to_gallery(g, ckpt, *new_items(3))
    assert os.listdir(root) == ["g"]
    assert sorted(os.listdir(g)) == ["embeddings.pt", "gallery.json", "notes.txt"]
    assert len(load_gallery(g)) == 7 and (g / "notes.txt").read_text() == "kept"


def test_a_first_build_that_was_interrupted_is_said_so(tmp_path):
    leftover = tmp_path / f".g.siamnet-{dead_pid()}-abcdefgh.new"
    leftover.mkdir()
    (leftover / "embeddings.pt").write_bytes(b"partial")
    with pytest.raises(
        CheckpointError, match="g: missing: a build of this gallery was interrupted"
    ):
        load_gallery(tmp_path / "g")
    with pytest.raises(CheckpointError, match=r"other: not a gallery folder \(missing\)"):
        load_gallery(tmp_path / "other")


def test_building_into_a_folder_of_other_files_is_refused(ckpt, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "cat.png").write_bytes(b"meow")
    images, _ = shape_set(1, seed=143)
    for overwrite in (False, True):
        with pytest.raises(DataError, match="a folder of other files .cat.png"):
            build_gallery(ckpt, images, [None] * 4, list("abcd"), photos, overwrite=overwrite)
    assert os.listdir(photos) == ["cat.png"]


def new_items(n: int, seed: int = 144):
    images = draw_shapes(torch.arange(n) % len(SHAPES), seed=seed)
    return images, [SHAPES[i % len(SHAPES)] for i in range(n)], [f"new{i}" for i in range(n)]


def run_python(code: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env=ENV,
    )


@pytest.mark.slow
def test_a_kill_between_the_two_renames_is_put_right_by_the_next_search(ckpt, ckpt_path, tmp_path):
    """Where folders cannot be exchanged in one step, the old gallery is renamed aside, then
    the new one into place: killed in between, the next load puts the old one back, whole."""
    g = small_gallery(ckpt, tmp_path / "g").path
    torch.save(new_items(6), tmp_path / "items.pt")
    result = run_python(
        f"""
        import os, signal, torch
        from siamnet import fileio
        from siamnet.checkpoint import load_checkpoint
        from siamnet.gallery import build_gallery
        fileio._exchange = lambda a, b: False
        real = os.rename
        def rename(src, dst):
            if str(src).endswith(".new"):
                os.kill(os.getpid(), signal.SIGKILL)
            real(src, dst)
        os.rename = rename
        images, labels, names = torch.load("items.pt")
        build_gallery(load_checkpoint({str(ckpt_path)!r}), images, labels, names, "g",
                      overwrite=True)
        """,
        tmp_path,
    )
    assert result.returncode == -9, result.stderr
    assert not g.exists()
    query = shape_png(tmp_path / "query.png", "ring", seed=145)
    found = siamnet("index", "search", g, query, "--top-k", "10", "--json")
    assert found.returncode == 0, found.stderr
    assert "put back the previous gallery" in found.stderr
    files = [m["file"] for m in json.loads(found.stdout)["results"][0]["matches"]]
    assert sorted(files) == [f"item{i}" for i in range(4)]  # the old gallery, all of it
    assert len(load_gallery(g)) == 4


@pytest.mark.slow
def test_a_kill_while_writing_leaves_the_old_gallery(ckpt, ckpt_path, tmp_path):
    root = tmp_path / "root"
    g = small_gallery(ckpt, root / "g").path
    before = {name: (g / name).read_bytes() for name in os.listdir(g)}
    torch.save(new_items(3), tmp_path / "items.pt")
    result = run_python(
        f"""
        import os, signal, torch
        from siamnet import gallery
        from siamnet.checkpoint import load_checkpoint
        from siamnet.gallery import store
        real = store.write_file
        def write_file(path, data, shown_as=None):
            if str(path).endswith("gallery.json"):
                os.kill(os.getpid(), signal.SIGKILL)
            real(path, data, shown_as)
        store.write_file = write_file
        images, labels, names = torch.load("items.pt")
        gallery.add_to_gallery({str(g)!r}, load_checkpoint({str(ckpt_path)!r}), images, labels,
                               names)
        """,
        tmp_path,
    )
    assert result.returncode == -9, result.stderr
    assert {name: (g / name).read_bytes() for name in os.listdir(g)} == before
    left = sorted(os.listdir(root))  # g, the half-written new folder and the writer's lock
    assert len(left) == 3 and ".g.siamnet-lock" in left, left
    assert len(load_gallery(g)) == 4
    add_to_gallery(g, ckpt, *new_items(3))
    assert os.listdir(root) == ["g"] and len(load_gallery(g)) == 7


@pytest.mark.slow
def test_a_full_disk_during_build_overwrite_is_one_line_and_keeps_the_gallery(ckpt_path, tmp_path):
    root = tmp_path / "root"
    data = write_shape_folder(tmp_path / "data", per_class=3, seed=146)
    built = siamnet("index", "build", ckpt_path, "--data", data, "--out", root / "g", "--json")
    assert built.returncode == 0, built.stderr
    g = root / "g"
    before = {name: (g / name).read_bytes() for name in os.listdir(g)}
    result = siamnet(
        "index",
        "build",
        ckpt_path,
        "--data",
        data,
        "--out",
        g,
        "--overwrite",
        preexec_fn=limit_file_size(2000),
    )
    line = one_error_line(result)
    assert line == (
        f"siamnet: error: no space left writing {g / 'embeddings.pt'} (the file size limit was "
        "reached); nothing was replaced: free some space and run again"
    )
    assert {name: (g / name).read_bytes() for name in os.listdir(g)} == before
    assert os.listdir(root) == ["g"]


@pytest.mark.parametrize(
    ("umask", "file_bits", "folder_bits"),
    [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)],
    ids=["umask-022", "umask-077"],
)
def test_a_gallery_is_written_with_the_umask(ckpt, tmp_path, umask, file_bits, folder_bits):
    old = os.umask(umask)
    try:
        g = small_gallery(ckpt, tmp_path / "g").path
        add_to_gallery(g, ckpt, *new_items(2))
    finally:
        os.umask(old)
    assert stat.S_IMODE(g.stat().st_mode) == folder_bits
    for name in ("embeddings.pt", "gallery.json"):
        assert stat.S_IMODE((g / name).stat().st_mode) == file_bits


@pytest.mark.slow
def test_index_search_refuses_a_bad_field_in_one_line(ckpt, tmp_path):
    g = small_gallery(ckpt, tmp_path / "g").path
    rewrite_info(g, count="many")
    query = shape_png(tmp_path / "query.png", "bar", seed=148)
    line = one_error_line(siamnet("index", "search", g, query))
    assert line.startswith(f"siamnet: error: {g / 'gallery.json'}: field count: expected")
