"""Seeded fuzzing of real files: a checkpoint made by ``siamnet train``, galleries made by
``siamnet index build``, and CSV, IDX (raw and gzip), npz, PNG and other image files, each
truncated, with bytes flipped, inserted or deleted, headers and JSON fields altered, files
swapped between galleries, or emptied.

Every case runs the verb that reads the file (``compare``, ``index search``, ``evaluate``,
``data info``) through ``siamnet.cli.main`` in this process, and a few run as the real command.
Each must end in one of two ways:

- exit status 2 with exactly one line on stderr, ``siamnet: error: ...``, naming the file, and
  no traceback;
- success with the right answer: the unmutated file's, or, where the mutation leaves a valid
  file with other content (a pixel value in a CSV, an IDX byte, a label in gallery.json, PNG
  pixels Pillow decodes), what an independent reading of the mutated file gives. Never a
  different answer with exit status 0.

No input file may change, and no file may appear or vanish. Reproduce one case with
``pytest tests/test_fuzz.py -k CASE_ID``.
"""

from __future__ import annotations

import codecs
import copy
import gzip
import io
import json
import math
import os
import random
import shutil
import statistics
import struct
import zlib
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fuzz_cases import (
    changed,
    mutate_bytes,
    normalized,
    problems,
    run_command,
    run_main,
    seeded_cases,
    snapshot,
    tiny_run,
)
from PIL import Image, ImageOps

pytestmark = pytest.mark.slow

SIZE = (28, 28)
CPU = ["--device", "cpu"]


# --- the real files --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Real files and the answers the CLI gives for them, made once for the module."""
    from siamnet.checkpoint import load_checkpoint
    from siamnet.data.registry import load_dataset

    root = tmp_path_factory.mktemp("fuzz-world")
    run = tiny_run(tmp_path_factory)
    model = root / "model.pt"
    shutil.copy(run / "best.pt", model)
    digits = load_dataset("digits").test
    by_class = [torch.nonzero(digits.labels == k).flatten().tolist() for k in range(10)]

    def png(path: Path, index: int) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(digits.images[index, 0].numpy()).save(path)
        return path

    w: dict[str, Any] = {"root": root, "model": model}
    w["a"] = png(root / "a.png", by_class[3][0])
    w["b"] = png(root / "b.png", by_class[3][1])
    w["q"] = png(root / "q.png", by_class[5][0])
    b_image = Image.open(w["b"])
    for suffix, fmt in OTHER_FORMATS.items():
        b_image.save(root / f"b{suffix}", fmt)
    for name, offset in (("data-A", 2), ("data-B", 4)):
        for k in range(10):
            for j in range(2):
                png(root / name / str(k) / f"{j}.png", by_class[k][offset + j])
    for gal, data in (("galA", "data-A"), ("galB", "data-B")):
        done = run_main(["index", "build", model, "--data", root / data, "--out", root / gal])
        assert done.code == 0, (done.crash, done.stderr)
        w[gal] = root / gal
    write_csv(root / "data.csv")
    write_idx(root / "idx-raw", gz=False)
    write_idx(root / "idx-gz", gz=True)
    write_npz(root / "data.npz")

    w["compare"] = search_digest(ok_json(["compare", model, w["a"], w["b"], "--json", *CPU]))
    w["search"] = {
        gal: search_digest(
            ok_json(["index", "search", w[gal], w["q"], "--json", "--top-k", "5", *CPU])
        )
        for gal in ("galA", "galB")
    }
    assert w["search"]["galA"] != w["search"]["galB"]
    w["info"] = {
        name: info_digest(ok_json(["data", "info", root / name, "--json"]))
        for name in ("data.csv", "idx-raw", "idx-gz", "data.npz")
    }
    assert normalized(w["info"]["data.csv"]) == normalized(
        csv_reference((root / "data.csv").read_bytes())
    )
    assert normalized(w["info"]["idx-raw"]) == normalized(idx_reference(root / "idx-raw"))
    w["ckpt"] = load_checkpoint(model)
    w["payload"] = torch.load(model, map_location="cpu", weights_only=True)
    w["a_pixels"] = decoded(w["a"])
    assert normalized(w["compare"]) == normalized(compare_expected(w, decoded(w["b"])))
    return w


def ok_json(argv: list) -> Any:
    done = run_main([str(a) for a in argv])
    assert done.code == 0, (argv, done.crash, done.stderr)
    return json.loads(done.stdout)


def check(
    argv: list,
    names: list,
    allowed: list,
    roots: list[Path],
    digest: Callable[[Any], Any] = lambda obj: obj,
) -> list[str]:
    """Run `argv` in-process; the problems with its outcome and with the files under `roots`."""
    before = snapshot(*roots)
    outcome = run_main([str(a) for a in argv])
    found = problems(outcome, [str(n) for n in names], allowed, digest)
    return found + changed(before, snapshot(*roots))


def assert_fine(case: str, found: list[str]) -> None:
    assert not found, f"{case}: " + "; ".join(found)


# --- checkpoints: bytes ----------------------------------------------------------------------

CHECKPOINT_BYTES = seeded_cases(
    "ckpt",
    {
        "truncate": 16,
        "truncate-tail": 3,
        "insert": 6,
        "delete": 6,
        "flip-head": 4,
        "flip-tail": 6,
        "empty": 1,
    },
)


@pytest.mark.parametrize(
    "case,mutation,seed", CHECKPOINT_BYTES, ids=[c[0] for c in CHECKPOINT_BYTES]
)
def test_checkpoint_bytes(world, tmp_path, case, mutation, seed):
    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(mutate_bytes(world["model"].read_bytes(), mutation, seed))
    argv = ["compare", ckpt, world["a"], world["b"], "--json", *CPU]
    found = check(argv, [ckpt.name], [world["compare"]], [tmp_path, world["root"]], search_digest)
    assert_fine(case, found)


CHECKPOINT_FLIPS = seeded_cases("ckpt-weights", {"flip": 8, "flip8": 4})


@pytest.mark.parametrize(
    "case,mutation,seed", CHECKPOINT_FLIPS, ids=[c[0] for c in CHECKPOINT_FLIPS]
)
def test_checkpoint_flipped_bytes_never_change_the_answer(world, tmp_path, case, mutation, seed):
    """Bytes flipped anywhere, mostly inside the weights: refused, or the same answer."""
    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(mutate_bytes(world["model"].read_bytes(), mutation, seed))
    argv = ["compare", ckpt, world["a"], world["b"], "--json", *CPU]
    found = check(argv, [ckpt.name], [world["compare"]], [tmp_path, world["root"]], search_digest)
    assert_fine(case, found)


def test_checkpoint_holding_a_pickle_that_would_run_code(world, tmp_path):
    """Refused in one whole line that names the file and the object, and nothing runs."""
    marker = tmp_path / "ran"
    ckpt = tmp_path / "model.pt"
    torch.save({**world["payload"], "extra": _RunsCommand(f"touch {marker}")}, ckpt)
    outcome = run_main(["compare", ckpt, world["a"], world["b"], "--json", *CPU])
    found = problems(outcome, [ckpt.name], [])
    line = outcome.stderr.strip()
    if "system" not in line:
        found.append(f"the message does not name the object (os.system): {line}")
    if "torch.serialization" in line or line.endswith("...") or line.endswith("...)"):
        found.append(f"the message is cut short: {line}")
    assert_fine("pickle with os.system", found)
    assert not marker.exists()


class _RunsCommand:
    """Unpickling this runs a shell command: what a malicious checkpoint holds."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


# --- checkpoints: metadata of the wrong type ---------------------------------------------------

HUGE = 10**30
NAN = float("nan")
INF = float("inf")


def spec(field: str, value: Any) -> Callable[[dict, dict], None]:
    def edit(payload: dict, meta: dict) -> None:
        meta["model_spec"][field] = value

    return edit


def meta_field(field: str, value: Any) -> Callable[[dict, dict], None]:
    def edit(payload: dict, meta: dict) -> None:
        meta[field] = value

    return edit


def meta_delete(field: str) -> Callable[[dict, dict], None]:
    def edit(payload: dict, meta: dict) -> None:
        del meta[field]

    return edit


def payload_field(field: str, value: Any) -> Callable[[dict, dict], None]:
    def edit(payload: dict, meta: dict) -> None:
        payload[field] = value

    return edit


def payload_delete(field: str) -> Callable[[dict, dict], None]:
    def edit(payload: dict, meta: dict) -> None:
        del payload[field]

    return edit


def raw_metadata(text: Any) -> Callable[[dict, dict], None]:
    """``metadata`` replaced as a whole (a JSON text of another kind, or not a string)."""

    def edit(payload: dict, meta: dict) -> None:
        payload["__raw_metadata__"] = text

    return edit


def weights(change: str) -> Callable[[dict, dict], None]:
    def edit(payload: dict, meta: dict) -> None:
        state = dict(payload["model"])
        name = next(k for k, v in state.items() if v.dim() == 4)  # a convolution's weight
        if change == "wider":
            w = state[name]
            state[name] = torch.cat([w, w[:1]])
        elif change == "narrower":
            state[name] = state[name][1:]
        elif change == "missing":
            del state[name]
        elif change == "extra":
            state["unexpected.weight"] = torch.zeros(3)
        elif change == "a list":
            state[name] = state[name].tolist()
        payload["model"] = state

    return edit


SPEC_VALUES = {
    "image_size": ["ab", "28", [28], [28, 28, 28], [0, 0], [-28, 28], ["a", "b"], {}, None]
    + [[HUGE, HUGE], [2**31, 2**31], HUGE],
    "normalization": [
        {},
        "x",
        [],
        None,
        {"scale": "a", "mean": [0.0], "std": [1.0]},
        {"scale": 255.0, "mean": "zero", "std": [1.0]},
        {"scale": 255.0, "mean": [0.0]},
        {"scale": 255.0, "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]},
    ],
    "model": [["conv4"], "no-such-model", 5, None, {}],
    "loss": ["x", [], None, 5],
    "in_channels": ["1", 0, -1, 3, None, [], HUGE],
    "head": ["x", 5, [], "l1"],
    "embedding_norm": ["yes", [], {}, 2, None],
    "learned_temperature": ["yes", [], 1],
    "unexpected_field": [1],
}
META_VALUES = {
    "threshold": ["high", [0.5], {}, NAN, INF, -INF, 10**400, True, "0.5"],
    "model_spec": ["x", [], {}, None, 5],
}
PAYLOAD_VALUES = {
    "format_version": ["abc", None, [], {}, NAN, 2, -1, 2**70, "1", True],
    "format": ["other", 5, None],
    "model": [[], "x", {}],
}
RAW_METADATA = ['"abc"', "5", "[]", "null", "{}", "", "{", 5, ["x"], {"model_spec": {}}]

CHECKPOINT_EDITS: dict[str, Callable[[dict, dict], None]] = {}
for _field, _values in SPEC_VALUES.items():
    for _v in _values:
        CHECKPOINT_EDITS[f"spec.{_field}={_v!r:.30}"] = spec(_field, _v)
for _field, _values in META_VALUES.items():
    for _v in _values:
        CHECKPOINT_EDITS[f"meta.{_field}={_v!r:.30}"] = meta_field(_field, _v)
CHECKPOINT_EDITS["meta.model_spec deleted"] = meta_delete("model_spec")
for _field, _values in PAYLOAD_VALUES.items():
    for _v in _values:
        CHECKPOINT_EDITS[f"payload.{_field}={_v!r:.30}"] = payload_field(_field, _v)
CHECKPOINT_EDITS["payload.model deleted"] = payload_delete("model")
CHECKPOINT_EDITS["payload.metadata deleted"] = payload_delete("metadata")
for _v in RAW_METADATA:
    CHECKPOINT_EDITS[f"payload.metadata={_v!r:.30}"] = raw_metadata(_v)
for _change in ("wider", "narrower", "missing", "extra", "a list"):
    CHECKPOINT_EDITS[f"weights {_change}"] = weights(_change)


def write_edited_checkpoint(world: dict, path: Path, edit: Callable[[dict, dict], None]) -> Path:
    payload = dict(world["payload"])
    meta = json.loads(payload["metadata"])
    meta = copy.deepcopy(meta)
    edit(payload, meta)
    if "__raw_metadata__" in payload:
        payload["metadata"] = payload.pop("__raw_metadata__")
    elif "metadata" in payload:
        payload["metadata"] = json.dumps(meta)
    torch.save(payload, path)
    return path


@pytest.mark.parametrize("edit", list(CHECKPOINT_EDITS))
def test_checkpoint_metadata_of_the_wrong_type(world, tmp_path, edit):
    ckpt = write_edited_checkpoint(world, tmp_path / "model.pt", CHECKPOINT_EDITS[edit])
    argv = ["compare", ckpt, world["a"], world["b"], "--json", *CPU]
    found = check(argv, [ckpt.name], [world["compare"]], [tmp_path, world["root"]], search_digest)
    assert_fine(edit, found)


SEARCH_EDITS = [
    "meta.threshold='high'",
    "meta.threshold=nan",
    "meta.threshold=[0.5]",
    "spec.normalization={}",
    "spec.image_size='ab'",
    "spec.embedding_norm='yes'",
    "payload.format_version='abc'",
    "payload.metadata='5'",
    "meta.model_spec deleted",
    "weights wider",
]


@pytest.mark.parametrize("edit", SEARCH_EDITS)
def test_checkpoint_metadata_of_the_wrong_type_in_index_search(world, tmp_path, edit):
    ckpt = write_edited_checkpoint(world, tmp_path / "model.pt", CHECKPOINT_EDITS[edit])
    argv = ["index", "search", world["galA"], world["q"], "--checkpoint", ckpt, "--json", *CPU]
    found = check(
        argv,
        [ckpt.name],
        [world["search"]["galA"]],
        [tmp_path, world["root"]],
        search_digest,
    )
    assert_fine(edit, found)


EVALUATE_EDITS = {
    "meta.classes='abc'": meta_field("classes", "abc"),
    "meta.classes=5": meta_field("classes", 5),
    "meta.classes={}": meta_field("classes", {}),
    "meta.training_args='x'": meta_field("training_args", "x"),
    "meta.training_args=[]": meta_field("training_args", []),
    "meta.training_args.data=5": lambda payload, meta: meta["training_args"].update(data=5),
    "meta.threshold='high'": meta_field("threshold", "high"),
}
EVALUATE = ["--pairs", "200", "--episodes", "20", "--ways", "4", "--shots", "1", "--quiet"]


@pytest.fixture(scope="module")
def evaluated(world):
    return evaluate_digest(ok_json(["evaluate", world["model"], *EVALUATE, "--json", "-", *CPU]))


@pytest.mark.parametrize("edit", list(EVALUATE_EDITS))
def test_checkpoint_metadata_of_the_wrong_type_in_evaluate(world, evaluated, tmp_path, edit):
    ckpt = write_edited_checkpoint(world, tmp_path / "model.pt", EVALUATE_EDITS[edit])
    argv = ["evaluate", ckpt, *EVALUATE, "--json", "-", *CPU]
    found = check(argv, [ckpt.name], [evaluated], [tmp_path, world["root"]], evaluate_digest)
    assert_fine(edit, found)


def evaluate_digest(obj: Any) -> Any:
    return {k: v for k, v in obj.items() if k not in ("checkpoint", "seconds")}


# --- galleries -------------------------------------------------------------------------------


def search_digest(obj: Any) -> Any:
    """Search or compare JSON without the paths that differ between copies."""
    return {k: v for k, v in obj.items() if k not in ("gallery", "a", "b")}


def copy_gallery(world: dict, gal: str, dest: Path) -> Path:
    shutil.copytree(world[gal], dest)
    return dest


def search_case(world: dict, tmp_path: Path, gallery: Path, allowed: list, names: list) -> list:
    argv = ["index", "search", gallery, world["q"], "--json", "--top-k", "5", *CPU]
    return check(argv, [*names, gallery], allowed, [tmp_path, world["root"]], search_digest)


def relabelled(answer: dict, original: dict, mutated: bytes) -> list[dict]:
    """The answers a mutated gallery.json may give: the original one, and, when the mutation
    left valid JSON that differs from the original only in the text of labels or file names,
    the original answer with those labels and names."""
    try:
        info = json.loads(mutated.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return [answer]
    if not isinstance(info, dict):
        return [answer]
    rest = {k: v for k, v in info.items() if k not in ("labels", "files")}
    if rest != {k: v for k, v in original.items() if k not in ("labels", "files")}:
        return [answer]
    labels, files = info.get("labels"), info.get("files")
    count = original["count"]
    if not (isinstance(labels, list) and isinstance(files, list)):
        return [answer]
    if len(labels) != count or len(files) != count:
        return [answer]
    if not all(isinstance(f, str) for f in files):
        return [answer]
    if not all(label is None or isinstance(label, str) for label in labels):
        return [answer]
    other = copy.deepcopy(answer)
    for result in other["results"]:
        for match in result["matches"]:
            match["file"] = files[match["index"]]
            match["label"] = labels[match["index"]]
    return [answer, other]


GALLERY_JSON_BYTES = seeded_cases(
    "gallery-json",
    {"truncate": 10, "truncate-tail": 2, "flip": 14, "insert": 4, "delete": 4, "empty": 1},
)


@pytest.mark.parametrize(
    "case,mutation,seed", GALLERY_JSON_BYTES, ids=[c[0] for c in GALLERY_JSON_BYTES]
)
def test_gallery_json_bytes(world, tmp_path, case, mutation, seed):
    gallery = copy_gallery(world, "galA", tmp_path / "gallery")
    info_file = gallery / "gallery.json"
    original = info_file.read_bytes()
    mutated = mutate_bytes(original, mutation, seed)
    info_file.write_bytes(mutated)
    allowed = relabelled(world["search"]["galA"], json.loads(original), mutated)
    assert_fine(case, search_case(world, tmp_path, gallery, allowed, [info_file.name]))


GALLERY_FIELDS: dict[str, Any] = {
    "count": ["many", -1, HUGE, 1.5, None, [], {}, NAN, 21, 19, 0],
    "labels": ["abc", {}, [1] * 20, None, ["0"] * 19],
    "files": [5, [None] * 20, [[]] * 20, None],
    "head": [5, [], "cosine", None],
    "checkpoint": ["x", [], {}, {"sha256": 5}, None],
    "format": ["other", 5],
    "format_version": ["abc", None, [], 2, NAN],
}
GALLERY_EDITS = [(f, v) for f, values in GALLERY_FIELDS.items() for v in values]
GALLERY_EDITS += [("checkpoint.sha256", []), ("checkpoint.path", 5), ("checkpoint.path", [])]


@pytest.mark.parametrize(
    "field,value", GALLERY_EDITS, ids=[f"{f}={v!r:.30}" for f, v in GALLERY_EDITS]
)
def test_gallery_json_fields_of_the_wrong_type(world, tmp_path, field, value):
    gallery = copy_gallery(world, "galA", tmp_path / "gallery")
    info_file = gallery / "gallery.json"
    info = json.loads(info_file.read_text())
    if "." in field:
        outer, inner = field.split(".")
        info[outer][inner] = value
    else:
        info[field] = value
    info_file.write_text(json.dumps(info))
    found = search_case(world, tmp_path, gallery, [world["search"]["galA"]], [info_file.name])
    assert_fine(f"gallery.json {field}={value!r}", found)


@pytest.mark.parametrize("whole", [[], "x", None, 5])
def test_gallery_json_that_is_not_an_object(world, tmp_path, whole):
    gallery = copy_gallery(world, "galA", tmp_path / "gallery")
    (gallery / "gallery.json").write_text(json.dumps(whole))
    found = search_case(world, tmp_path, gallery, [], ["gallery.json"])
    assert_fine(f"gallery.json = {whole!r}", found)


EMBEDDING_BYTES = seeded_cases(
    "embeddings",
    {"truncate": 12, "insert": 4, "delete": 4, "flip-head": 3, "flip-tail": 4, "empty": 1},
)


@pytest.mark.parametrize("case,mutation,seed", EMBEDDING_BYTES, ids=[c[0] for c in EMBEDDING_BYTES])
def test_gallery_embeddings_bytes(world, tmp_path, case, mutation, seed):
    gallery = copy_gallery(world, "galA", tmp_path / "gallery")
    emb = gallery / "embeddings.pt"
    emb.write_bytes(mutate_bytes(emb.read_bytes(), mutation, seed))
    assert_fine(case, search_case(world, tmp_path, gallery, [world["search"]["galA"]], [emb.name]))


EMBEDDING_FLIPS = seeded_cases("embeddings-values", {"flip": 8, "flip8": 4})


@pytest.mark.parametrize("case,mutation,seed", EMBEDDING_FLIPS, ids=[c[0] for c in EMBEDDING_FLIPS])
def test_gallery_embeddings_flipped_bytes_never_change_the_answer(
    world, tmp_path, case, mutation, seed
):
    gallery = copy_gallery(world, "galA", tmp_path / "gallery")
    emb = gallery / "embeddings.pt"
    emb.write_bytes(mutate_bytes(emb.read_bytes(), mutation, seed))
    assert_fine(case, search_case(world, tmp_path, gallery, [world["search"]["galA"]], [emb.name]))


def _embeddings(change: str, e: torch.Tensor) -> Any:
    n, d = e.shape
    return {
        "wider": lambda: {"embeddings": torch.cat([e, e[:, :1]], dim=1)},
        "narrower": lambda: {"embeddings": e[:, 1:].contiguous()},
        "fewer rows": lambda: {"embeddings": e[: n - 1].clone()},
        "int64": lambda: {"embeddings": (e * 100).to(torch.int64)},
        "uint8": lambda: {"embeddings": (e.abs() * 100).to(torch.uint8)},
        "NaN": lambda: {"embeddings": torch.full_like(e, float("nan"))},
        "1-D": lambda: {"embeddings": e.flatten()},
        "3-D": lambda: {"embeddings": e[None]},
        "a list": lambda: {"embeddings": e.tolist()},
        "a string": lambda: {"embeddings": "x"},
        "no key": lambda: {"vectors": e},
        "a bare tensor": lambda: e,
    }[change]()


@pytest.mark.parametrize(
    "change",
    ["wider", "narrower", "fewer rows", "int64", "uint8", "NaN", "1-D", "3-D", "a list"]
    + ["a string", "no key", "a bare tensor"],
)
def test_gallery_embeddings_of_the_wrong_shape_or_type(world, tmp_path, change):
    gallery = copy_gallery(world, "galA", tmp_path / "gallery")
    emb = gallery / "embeddings.pt"
    e = torch.load(emb, weights_only=True)["embeddings"]
    torch.save(_embeddings(change, e), emb)
    found = search_case(world, tmp_path, gallery, [], [emb.name])
    assert_fine(f"embeddings.pt {change}", found)


def test_gallery_embeddings_with_extra_rows_are_refused_or_harmless(world, tmp_path):
    """Rows past the recorded count: refused in one line (embeddings must be exactly
    ``[count, dim]``), never a different answer."""
    gallery = copy_gallery(world, "galA", tmp_path / "gallery")
    emb = gallery / "embeddings.pt"
    e = torch.load(emb, weights_only=True)["embeddings"]
    torch.save({"embeddings": torch.cat([e, torch.randn(5, e.shape[1])])}, emb)
    found = search_case(world, tmp_path, gallery, [world["search"]["galA"]], [emb.name])
    assert_fine("embeddings.pt extra rows", found)


SWAPS = {
    "A's gallery.json with B's embeddings.pt": ("galA", "embeddings.pt", "galB"),
    "B's gallery.json with A's embeddings.pt": ("galB", "embeddings.pt", "galA"),
}


@pytest.mark.parametrize("swap", list(SWAPS))
def test_gallery_files_swapped_between_two_galleries(world, tmp_path, swap):
    """Two galleries of the same size by the same model: a folder holding one's description
    and the other's embeddings gives exactly A's or B's answer, or is refused."""
    base, member, other = SWAPS[swap]
    gallery = copy_gallery(world, base, tmp_path / "gallery")
    shutil.copy(world[other] / member, gallery / member)
    allowed = [world["search"]["galA"], world["search"]["galB"]]
    both = ["gallery.json", "embeddings.pt"]
    assert_fine(swap, search_case(world, tmp_path, gallery, allowed, both))


@pytest.mark.parametrize("member", ["gallery.json", "embeddings.pt"])
def test_gallery_member_missing(world, tmp_path, member):
    gallery = copy_gallery(world, "galA", tmp_path / "gallery")
    (gallery / member).unlink()
    assert_fine(f"{member} missing", search_case(world, tmp_path, gallery, [], [member]))


# --- data files: the summary `data info` prints, and an independent reading ------------------


def info_digest(obj: Any) -> list:
    """What ``data info --json`` says of each present split, without paths and notes."""
    out = []
    for s in obj["splits"]:
        if not s["present"]:
            continue
        counts = s["class_counts"]
        out.append(
            [
                s["name"],
                s["examples"],
                s["classes"],
                s["per_class"],
                None if counts is None else sorted(counts.values()),
                s["height"],
                s["width"],
                s["channels"],
                s["pixel_min"],
                s["pixel_max"],
                s["pixel_mean"],
            ]
        )
    return out


def summary_of(name: str, pixels: np.ndarray, keys: list, channels: int = 1) -> list:
    """`info_digest` of images ``[N, (C,) H, W]`` whose labels are `keys` (one per image)."""
    counts = list(Counter(keys).values())
    per_class = {"min": min(counts), "median": float(statistics.median(counts)), "max": max(counts)}
    return [
        [
            name,
            len(keys),
            len(counts),
            per_class,
            sorted(counts) if len(counts) <= 20 else None,
            int(pixels.shape[-2]),
            int(pixels.shape[-1]),
            channels,
            int(pixels.min()),
            int(pixels.max()),
            round(int(pixels.astype(np.int64).sum()) / pixels.size, 3),
        ]
    ]


def data_case(world: dict, tmp_path: Path, spec: Path, names: list, allowed: list) -> list:
    argv = ["data", "info", spec, "--json"]
    return check(argv, names, allowed, [tmp_path, world["root"]], info_digest)


# --- CSV -------------------------------------------------------------------------------------


def write_csv(path: Path) -> None:
    """60 rows of a label (0..4) and 8x8 pixel values, no header, as the blog post's CSV."""
    rng = np.random.default_rng(1)
    rows = [",".join([str(i % 5), *map(str, rng.integers(0, 256, 64).tolist())]) for i in range(60)]
    path.write_text("\n".join(rows) + "\n")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _cell(text: str) -> str:
    return text.strip().strip("\"'")


def csv_reference(data: bytes) -> list | None:
    """The summary of a CSV as the README describes the format (a label, then H*W pixel values
    0..255 of a square image; a header row is skipped; blank lines are ignored), or None when
    the file is not valid."""
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return None
    cells = [_cell(c) for c in lines[0].split(",")]
    named = [c for c in cells[1:] if c]
    header = bool(named) and sum(not _is_number(c) for c in named) * 2 > len(named)
    if not header and len(lines) > 1 and not _is_number(cells[0]):
        header = _is_number(_cell(lines[1].split(",", 1)[0]))
    rows = lines[1:] if header else lines
    if not rows:
        return None
    ncols = rows[0].count(",") + 1
    side = math.isqrt(ncols - 1)
    if ncols < 2 or side * side != ncols - 1:
        return None
    if any(r.count(",") != ncols - 1 for r in rows) or (
        header and lines[0].count(",") != ncols - 1
    ):
        return None
    pixels = np.empty((len(rows), ncols - 1), dtype=np.int64)
    for i, row in enumerate(rows):
        for j, c in enumerate(row.split(",")[1:]):
            try:
                v = float(c)
            except ValueError:
                return None
            if not (math.isfinite(v) and 0 <= v <= 255 and v == math.floor(v)):
                return None
            pixels[i, j] = int(v)
    labels = [_cell(r.split(",", 1)[0].rstrip("\x00")).rstrip("\x00") for r in rows]
    if any(not t for t in labels):
        return None
    keys: list = labels
    try:
        numbers = [float(t) for t in labels]
    except ValueError:
        numbers = None
    if numbers is not None:
        if any(math.isnan(x) for x in numbers):
            return None
        if all(math.isfinite(x) and x == math.floor(x) and abs(x) < 2**53 for x in numbers):
            keys = [int(x) for x in numbers]
    if len(set(keys)) < 2:
        return None
    return summary_of("train", pixels.reshape(len(rows), side, side), keys)


CSV_BYTES = seeded_cases(
    "csv",
    {"truncate": 10, "truncate-tail": 3, "flip": 18, "flip8": 3, "insert": 6, "delete": 6},
)
CSV_BYTES += [("csv-empty", "empty", 0)]


@pytest.mark.parametrize("case,mutation,seed", CSV_BYTES, ids=[c[0] for c in CSV_BYTES])
def test_csv_bytes(world, tmp_path, case, mutation, seed):
    path = tmp_path / "data.csv"
    path.write_bytes(mutate_bytes((world["root"] / "data.csv").read_bytes(), mutation, seed))
    allowed = [world["info"]["data.csv"], csv_reference(path.read_bytes())]
    assert_fine(case, data_case(world, tmp_path, path, [path.name], [a for a in allowed if a]))


def _csv_text(world: dict) -> str:
    return (world["root"] / "data.csv").read_text()


def _first_pixel(value: str) -> Callable[[str], str]:
    """The first pixel of the first row replaced by `value`."""
    return lambda t: "0," + value + t[t.index(",", 2) :]


CSV_CRAFTED: dict[str, Callable[[str], str]] = {
    "a pixel 300": _first_pixel("300"),
    "a pixel -1": _first_pixel("-1"),
    "a pixel 3.0": _first_pixel("3.0"),
    "a pixel 1e2": _first_pixel("1e2"),
    "a pixel nan": _first_pixel("nan"),
    "a pixel 2.5": _first_pixel("2.5"),
    "an empty cell": _first_pixel(""),
    "a header row": lambda t: "label," + ",".join(f"pixel{i}" for i in range(64)) + "\n" + t,
    "only a header": lambda t: "label," + ",".join(f"pixel{i}" for i in range(64)) + "\n",
    "CRLF line ends": lambda t: t.replace("\n", "\r\n"),
    "blank lines": lambda t: t.replace("\n", "\n\n", 5),
    "a byte-order mark": lambda t: "\ufeff" + t,
    "one class": lambda t: "\n".join("0" + r[r.index(",") :] for r in t.splitlines()),
    "a short row": lambda t: t + "1,2,3\n",
    "non-square": lambda t: "\n".join(r + ",0" for r in t.splitlines()),
    "a label only": lambda t: "\n".join(r.split(",")[0] for r in t.splitlines()),
    "not UTF-8": lambda t: t[:100] + "\udcff" + t[100:],
}


@pytest.mark.parametrize("craft", list(CSV_CRAFTED))
def test_csv_crafted(world, tmp_path, craft):
    path = tmp_path / "data.csv"
    path.write_bytes(CSV_CRAFTED[craft](_csv_text(world)).encode("utf-8", "surrogateescape"))
    reference = csv_reference(path.read_bytes())
    allowed = [reference] if reference else []
    assert_fine(craft, data_case(world, tmp_path, path, [path.name], allowed))


# --- IDX -------------------------------------------------------------------------------------

IDX_IMAGES = "train-images-idx3-ubyte"
IDX_LABELS = "train-labels-idx1-ubyte"
IDX_N, IDX_H, IDX_W = 40, 8, 8


def idx_bytes(array: np.ndarray, dims: tuple[int, ...] | None = None, magic: int = 0) -> bytes:
    dims = array.shape if dims is None else dims
    magic = magic or (0x0800 | len(dims))
    return struct.pack(">I", magic) + struct.pack(f">{len(dims)}I", *dims) + array.tobytes()


def write_idx(folder: Path, gz: bool) -> None:
    rng = np.random.default_rng(2)
    folder.mkdir(parents=True, exist_ok=True)
    images = rng.integers(0, 256, (IDX_N, IDX_H, IDX_W), dtype=np.uint8)
    labels = (np.arange(IDX_N) % 4).astype(np.uint8)
    for name, data in ((IDX_IMAGES, idx_bytes(images)), (IDX_LABELS, idx_bytes(labels))):
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data, mtime=0))
        else:
            (folder / name).write_bytes(data)


def _idx_array(data: bytes, ndim: int) -> np.ndarray | None:
    header = 4 + 4 * ndim
    if len(data) < header or int.from_bytes(data[:4], "big") != 0x0800 | ndim:
        return None
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    if len(data) != header + math.prod(dims) or 0 in dims:
        return None  # the wrong size, no images, or images of zero height or width
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def idx_reference(folder: Path) -> list | None:
    """The summary of an IDX images/labels pair as the format defines it, or None."""
    found = {}
    for name, ndim in ((IDX_IMAGES, 3), (IDX_LABELS, 1)):
        raw, packed = folder / name, folder / f"{name}.gz"
        try:
            data = raw.read_bytes() if raw.exists() else gzip.decompress(packed.read_bytes())
        except (OSError, EOFError, zlib.error):
            return None
        found[name] = _idx_array(data, ndim)
        if found[name] is None:
            return None
    images, labels = found[IDX_IMAGES], found[IDX_LABELS]
    if len(images) != len(labels) or len(set(labels.tolist())) < 2:
        return None
    return summary_of("train", images, labels.tolist())


IDX_BYTES = [
    *seeded_cases(
        "idx-images",
        {"truncate": 8, "flip": 8, "flip-head": 6, "insert": 4, "delete": 4, "empty": 1},
    ),
    *seeded_cases("idx-labels", {"truncate": 4, "flip": 6, "flip-head": 3, "empty": 1}),
    *seeded_cases("idx-gz-images", {"truncate": 5, "truncate-tail": 2, "flip": 5, "flip-head": 4}),
    *seeded_cases("idx-gz-labels", {"truncate": 2, "flip": 2, "flip-head": 2, "empty": 1}),
]


@pytest.mark.parametrize("case,mutation,seed", IDX_BYTES, ids=[c[0] for c in IDX_BYTES])
def test_idx_bytes(world, tmp_path, case, mutation, seed):
    packed = case.startswith("idx-gz")
    source = world["root"] / ("idx-gz" if packed else "idx-raw")
    folder = shutil.copytree(source, tmp_path / source.name)
    name = (IDX_IMAGES if "-images-" in case else IDX_LABELS) + (".gz" * packed)
    target = folder / name
    target.write_bytes(mutate_bytes(target.read_bytes(), mutation, seed))
    allowed = [world["info"][source.name], idx_reference(folder)]
    found = data_case(world, tmp_path, folder, [name], [a for a in allowed if a is not None])
    assert_fine(case, found)


def _idx_images(world: dict) -> np.ndarray:
    data = (world["root"] / "idx-raw" / IDX_IMAGES).read_bytes()
    return np.frombuffer(data, dtype=np.uint8, offset=16).reshape(IDX_N, IDX_H, IDX_W)


#: Images-file headers: (dims, payload bytes (None: the original pixels), magic).
IDX_HEADERS: dict[str, tuple[tuple[int, ...], bytes | None, int]] = {
    "one image more": ((IDX_N + 1, IDX_H, IDX_W), None, 0),
    "one image fewer": ((IDX_N - 1, IDX_H, IDX_W), None, 0),
    "height and width swapped for 4x16": ((IDX_N, 4, 16), None, 0),
    "no images": ((0, IDX_H, IDX_W), b"", 0),
    "zero height": ((IDX_N, 0, IDX_W), b"", 0),
    "zero width": ((IDX_N, IDX_H, 0), b"", 0),
    "dims of 2**32-1": ((2**32 - 1, 2**32 - 1, 2**32 - 1), None, 0),
    "dims whose product wraps to 0 in int64": ((2**22, 2**21, 2**21), b"", 0),
    "dims whose product wraps to the file size": ((2977518503, 21398, 289529), bytes(10), 0),
    "magic of a labels file": ((IDX_N, IDX_H, IDX_W), None, 0x0801),
    "magic of float data": ((IDX_N, IDX_H, IDX_W), None, 0x0D03),
    "magic of 4 dims": ((IDX_N, IDX_H, IDX_W), None, 0x0804),
}


@pytest.mark.parametrize("header", list(IDX_HEADERS))
def test_idx_headers_altered(world, tmp_path, header):
    dims, payload, magic = IDX_HEADERS[header]
    folder = shutil.copytree(world["root"] / "idx-raw", tmp_path / "idx")
    body = _idx_images(world).tobytes() if payload is None else payload
    head = struct.pack(">I", magic or 0x0803) + struct.pack(f">{len(dims)}I", *dims)
    (folder / IDX_IMAGES).write_bytes(head + body)
    if header == "one image fewer":
        (folder / IDX_IMAGES).write_bytes(head + body[: (IDX_N - 1) * IDX_H * IDX_W])
    reference = idx_reference(folder)
    allowed = [reference] if reference is not None else []
    assert_fine(header, data_case(world, tmp_path, folder, [IDX_IMAGES], allowed))


# --- npz -------------------------------------------------------------------------------------


def write_npz(path: Path) -> None:
    rng = np.random.default_rng(3)
    np.savez_compressed(
        path,
        images=rng.integers(0, 256, (40, 8, 8), dtype=np.uint8),
        labels=np.arange(40) % 4,
        classes=np.array(["a", "b", "c", "d"]),
    )


NPZ_BYTES = seeded_cases(
    "npz",
    {
        "truncate": 8,
        "truncate-tail": 2,
        "flip": 6,
        "flip-head": 3,
        "flip-tail": 5,
        "insert": 3,
        "delete": 3,
        "empty": 1,
    },
)


@pytest.mark.parametrize("case,mutation,seed", NPZ_BYTES, ids=[c[0] for c in NPZ_BYTES])
def test_npz_bytes(world, tmp_path, case, mutation, seed):
    """Zip members carry a CRC: a mutated .npz is refused or, where only a zip header field
    nobody reads changed, gives the same summary."""
    path = tmp_path / "data.npz"
    path.write_bytes(mutate_bytes((world["root"] / "data.npz").read_bytes(), mutation, seed))
    assert_fine(case, data_case(world, tmp_path, path, [path.name], [world["info"]["data.npz"]]))


def _npz(**arrays: Any) -> Callable[[], dict]:
    base = {
        "images": np.zeros((40, 8, 8), np.uint8),
        "labels": np.arange(40) % 4,
    }
    return lambda: {**base, **arrays}


NPZ_CRAFTED: dict[str, Callable[[], dict]] = {
    "no images, uint8": _npz(images=np.zeros((0, 8, 8), np.uint8), labels=np.zeros(0, int)),
    "no images, float": _npz(images=np.zeros((0, 8, 8), np.float32), labels=np.zeros(0, int)),
    "no images, int16": _npz(images=np.zeros((0, 8, 8), np.int16), labels=np.zeros(0, int)),
    "zero height": _npz(images=np.zeros((40, 0, 8), np.uint8)),
    "zero width": _npz(images=np.zeros((40, 8, 0), np.uint8)),
    "zero height, float": _npz(images=np.zeros((40, 0, 8), np.float32)),
    "NCHW of zero size": _npz(images=np.zeros((40, 1, 0, 0), np.uint8)),
    "two channels": _npz(images=np.zeros((40, 2, 8, 8), np.uint8)),
    "five dimensions": _npz(images=np.zeros((40, 1, 1, 8, 8), np.uint8)),
    "NaN pixels": _npz(images=np.full((40, 8, 8), np.nan, np.float32)),
    "pixels 0..1000": _npz(images=np.full((40, 8, 8), 1000, np.int32)),
    "labels one short": _npz(labels=np.arange(39) % 4),
    "labels 2-D": _npz(labels=(np.arange(40) % 4).reshape(40, 1)),
    "labels NaN": _npz(labels=np.full(40, np.nan)),
    "labels past the class names": _npz(classes=np.array(["a", "b"])),
    "a label not among the names": _npz(labels=np.array(["a", "z"] * 20), classes=np.array(["a"])),
    "groups of the wrong length": _npz(classes=np.array(list("abcd")), groups=np.array(["g"])),
    "images of strings": _npz(images=np.full((40, 8, 8), "x")),
    "no labels": lambda: {"images": np.zeros((40, 8, 8), np.uint8)},
}


@pytest.mark.parametrize("craft", list(NPZ_CRAFTED))
def test_npz_crafted(world, tmp_path, craft):
    path = tmp_path / "data.npz"
    np.savez(path, **NPZ_CRAFTED[craft]())
    assert_fine(craft, data_case(world, tmp_path, path, [path.name], []))


def test_npz_holding_a_pickle_is_refused_without_running_it(world, tmp_path):
    path = tmp_path / "data.npz"
    marker = tmp_path / "ran"
    np.savez(path, images=np.array([_Runs(str(marker))], dtype=object), labels=np.zeros(1))
    assert_fine("object array", data_case(world, tmp_path, path, [path.name], []))
    assert not marker.exists()


class _Runs:
    """Unpickling this writes a file: a pickle that would run code."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (Path(self.path).write_text, ("x",))


# --- images ----------------------------------------------------------------------------------

OTHER_FORMATS = {".avif": "AVIF", ".webp": "WEBP", ".jpg": "JPEG", ".tif": "TIFF"}
OTHER_FORMATS |= {".gif": "GIF", ".bmp": "BMP"}


def decoded(path: Path) -> torch.Tensor | None:
    """An image file as uint8 ``[1, 28, 28]`` read by Pillow directly (EXIF orientation
    applied, greyscale), brought to the model's size by the checkpoint's geometry (shorter side
    resized, centre cropped: `siamnet.images.fit_image`), or None when Pillow cannot read it."""
    from siamnet.images import fit_image

    try:
        with Image.open(path) as image:
            image.load()
            image = fit_image(ImageOps.exif_transpose(image).convert("L"), SIZE, "crop")
            return torch.from_numpy(np.array(image, dtype=np.uint8)[None].copy())
    except Exception:  # noqa: BLE001 - any failure means the file is not readable
        return None


def compare_expected(world: dict, b_pixels: torch.Tensor | None) -> dict | None:
    """The answer of ``compare`` for image b decoded as `b_pixels` (None if unreadable)."""
    from siamnet.infer import compare

    if b_pixels is None:
        return None
    result = compare(world["ckpt"], world["a_pixels"], b_pixels)
    return {"head": world["ckpt"].spec.head, **result.to_dict()}


def image_case(world: dict, tmp_path: Path, path: Path) -> list:
    allowed = [world["compare"], compare_expected(world, decoded(path))]
    argv = ["compare", world["model"], world["a"], path, "--json", *CPU]
    return check(
        argv, [path.name], [a for a in allowed if a], [tmp_path, world["root"]], search_digest
    )


PNG_BYTES = seeded_cases(
    "png",
    {"truncate": 9, "truncate-tail": 2, "flip": 12, "flip-head": 5, "insert": 3, "delete": 3},
)
PNG_BYTES += [("png-empty", "empty", 0)]


@pytest.mark.parametrize("case,mutation,seed", PNG_BYTES, ids=[c[0] for c in PNG_BYTES])
def test_png_bytes(world, tmp_path, case, mutation, seed):
    path = tmp_path / "b.png"
    path.write_bytes(mutate_bytes(world["b"].read_bytes(), mutation, seed))
    assert_fine(case, image_case(world, tmp_path, path))


def png_chunks(data: bytes) -> list[list]:
    """``[type, body, crc]`` of each chunk of a PNG file."""
    chunks, at = [], 8
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        kind = data[at + 4 : at + 8]
        body = data[at + 8 : at + 8 + length]
        crc = data[at + 8 + length : at + 12 + length]
        chunks.append([kind, body, crc])
        at += 12 + length
    return chunks


def png_join(chunks: list[list], fix_crc: bool = True) -> bytes:
    out = b"\x89PNG\r\n\x1a\n"
    for kind, body, crc in chunks:
        if fix_crc:
            crc = struct.pack(">I", zlib.crc32(kind + body))
        out += struct.pack(">I", len(body)) + kind + body + crc
    return out


def _ihdr(**fields: int) -> Callable[[list], bool]:
    def edit(chunks: list) -> bool:
        width, height, depth, colour, comp, filt, inter = struct.unpack(">IIBBBBB", chunks[0][1])
        values = dict(width=width, height=height, depth=depth, colour=colour)
        values.update(fields)
        chunks[0][1] = struct.pack(
            ">IIBBBBB", values["width"], values["height"], values["depth"], values["colour"],
            comp, filt, inter,
        )  # fmt: skip
        return True

    return edit


def _rename(old: bytes, new: bytes) -> Callable[[list], bool]:
    def edit(chunks: list) -> bool:
        for c in chunks:
            if c[0] == old:
                c[0] = new
        return True

    return edit


def _bad_crc(chunks: list) -> bool:
    chunks[0][2] = bytes(b ^ 0xFF for b in struct.pack(">I", zlib.crc32(b"IHDR" + chunks[0][1])))
    return False


def _drop_iend(chunks: list) -> bool:
    chunks[:] = [c for c in chunks if c[0] != b"IEND"]
    return True


def _cut_idat(chunks: list) -> bool:
    for c in chunks:
        if c[0] == b"IDAT":
            c[1] = c[1][: len(c[1]) // 2]
    return True


def _double_idat(chunks: list) -> bool:
    at = next(i for i, c in enumerate(chunks) if c[0] == b"IDAT")
    chunks.insert(at + 1, list(chunks[at]))
    return True


def _unknown_critical(chunks: list) -> bool:
    chunks.insert(1, [b"ABCD", b"\x00" * 8, b""])
    return True


PNG_HEADERS: dict[str, Callable[[list], bool]] = {
    "width 0": _ihdr(width=0),
    "height 0": _ihdr(height=0),
    "width and height 2**31-1": _ihdr(width=2**31 - 1, height=2**31 - 1),
    "width 100000": _ihdr(width=100000),
    "width + 1": _ihdr(width=29),
    "height + 1": _ihdr(height=29),
    "bit depth 16": _ihdr(depth=16),
    "bit depth 3": _ihdr(depth=3),
    "colour type RGBA": _ihdr(colour=6),
    "colour type 5": _ihdr(colour=5),
    "IHDR checksum broken": _bad_crc,
    "IDAT renamed": _rename(b"IDAT", b"IDAX"),
    "IHDR renamed": _rename(b"IHDR", b"IHDX"),
    "IEND removed": _drop_iend,
    "IDAT cut in half": _cut_idat,
    "IDAT twice": _double_idat,
    "an unknown critical chunk": _unknown_critical,
}


@pytest.mark.parametrize("header", list(PNG_HEADERS))
def test_png_headers_altered(world, tmp_path, header):
    chunks = png_chunks(world["b"].read_bytes())
    fix = PNG_HEADERS[header](chunks)
    path = tmp_path / "b.png"
    path.write_bytes(png_join(chunks, fix_crc=fix))
    assert_fine(header, image_case(world, tmp_path, path))


def test_png_with_an_exif_orientation_is_read_turned(world, tmp_path):
    """A valid file with other content: EXIF orientation 6 (turned 90 degrees)."""
    path = tmp_path / "b.png"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.open(world["b"]).save(path, exif=exif)
    expected = compare_expected(world, decoded(path))
    assert expected is not None and expected != compare_expected(world, decoded(world["b"]))
    argv = ["compare", world["model"], world["a"], path, "--json", *CPU]
    found = check(argv, [path.name], [expected], [tmp_path, world["root"]], search_digest)
    assert_fine("exif orientation 6", found)


OTHER_BYTES = [
    (case, suffix, mutation, seed)
    for suffix in OTHER_FORMATS
    for case, mutation, seed in seeded_cases(
        f"image{suffix}", {"truncate": 2, "flip": 2, "insert": 1}
    )
]


@pytest.mark.parametrize("case,suffix,mutation,seed", OTHER_BYTES, ids=[c[0] for c in OTHER_BYTES])
def test_other_image_formats_damaged(world, tmp_path, case, suffix, mutation, seed):
    path = tmp_path / f"b{suffix}"
    path.write_bytes(mutate_bytes((world["root"] / f"b{suffix}").read_bytes(), mutation, seed))
    assert_fine(case, image_case(world, tmp_path, path))


_DAMAGED_AVIF: dict[bytes, list[bytes]] = {}


def damaged_avif(original: bytes, how_many: int) -> list[bytes]:
    """Seeded damages of an AVIF file that make Pillow's AVIF decoder raise RuntimeError."""
    if original not in _DAMAGED_AVIF:
        _DAMAGED_AVIF[original] = _search_damaged_avif(original, 3)
    return _DAMAGED_AVIF[original][:how_many]


def _search_damaged_avif(original: bytes, how_many: int) -> list[bytes]:
    rng, found = random.Random(11), []
    for _ in range(2000):
        data = bytearray(original)
        at = rng.randrange(len(data))
        if rng.random() < 0.5:
            data[at] ^= rng.randrange(1, 256)
        else:
            data[at:at] = rng.randbytes(4)
        try:
            with Image.open(io.BytesIO(bytes(data))) as image:
                image.load()
        except RuntimeError:
            found.append(bytes(data))
            if len(found) == how_many:
                break
        except Exception:  # noqa: BLE001, S112 - other failures are covered elsewhere
            continue
    return found


@pytest.mark.parametrize("index", range(3))
def test_damaged_avif_that_makes_the_decoder_raise_runtime_error(world, tmp_path, index):
    damaged = damaged_avif((world["root"] / "b.avif").read_bytes(), 3)
    if len(damaged) <= index:
        pytest.skip("this Pillow's AVIF decoder raised no RuntimeError on the damaged files")
    path = tmp_path / "b.avif"
    path.write_bytes(damaged[index])
    assert_fine(f"damaged avif {index}", image_case(world, tmp_path, path))


# --- a handful through the real command ------------------------------------------------------


def _real_command_cases(world: dict, tmp_path: Path) -> list[tuple[str, list, list, list]]:
    """(case, argv, names, allowed) for a few cases of each kind, as files in `tmp_path`."""
    out = []
    ckpt = tmp_path / "cut.pt"
    ckpt.write_bytes(world["model"].read_bytes()[:5000])
    out.append(("truncated checkpoint", ["compare", ckpt, world["a"], world["b"]], [ckpt.name]))
    bad = write_edited_checkpoint(
        world, tmp_path / "norm.pt", CHECKPOINT_EDITS["spec.normalization={}"]
    )
    out.append(("normalisation {}", ["compare", bad, world["a"], world["b"]], [bad.name]))
    gallery = copy_gallery(world, "galA", tmp_path / "gallery")
    info = json.loads((gallery / "gallery.json").read_text())
    info["count"] = "many"
    (gallery / "gallery.json").write_text(json.dumps(info))
    out.append(("gallery count 'many'", ["index", "search", gallery, world["q"]], ["gallery"]))
    idx = shutil.copytree(world["root"] / "idx-raw", tmp_path / "idx")
    head = struct.pack(">IIII", 0x0803, 2977518503, 21398, 289529)
    (idx / IDX_IMAGES).write_bytes(head + bytes(10))
    out.append(("IDX dims overflowing int64", ["data", "info", idx], [IDX_IMAGES]))
    damaged = damaged_avif((world["root"] / "b.avif").read_bytes(), 1)
    if damaged:
        avif = tmp_path / "b.avif"
        avif.write_bytes(damaged[0])
        out.append(("damaged AVIF", ["compare", world["model"], world["a"], avif], [avif.name]))
    return [
        (case, [*argv, *CPU] if argv[0] != "data" else argv, names, []) for case, argv, names in out
    ]


def test_a_handful_of_cases_through_the_real_command(world, tmp_path):
    """The same rules with the installed ``siamnet`` command: exit status 2, one line, no
    traceback, nothing changed."""
    failures = []
    for case, argv, names, allowed in _real_command_cases(world, tmp_path):
        before = snapshot(tmp_path, world["root"])
        outcome = run_command(argv)
        found = problems(outcome, names, allowed) + changed(
            before, snapshot(tmp_path, world["root"])
        )
        if found:
            failures.append(f"{case}: {'; '.join(found)}")
    assert not failures, "\n".join(failures)
