"""The built-in ``glyphs`` set: the same bytes on every rendering, Omniglot's layout (characters
as classes, alphabets as groups, background and evaluation alphabets), the cache and its
checksum, and a missing or broken font refused in one line naming it."""

from __future__ import annotations

import hashlib
import os
import shutil
import unicodedata
from pathlib import Path

import numpy as np
import pytest
import torch

from siamnet.data.registry import load_dataset
from siamnet.data.sources import glyphs
from siamnet.errors import DataError
from siamnet.train import TrainConfig
from siamnet.train.data import prepare_data


@pytest.fixture(scope="module")
def paths() -> dict[str, Path]:
    return glyphs.font_paths(glyphs.font_dir())


@pytest.fixture(scope="module")
def rendered(paths) -> dict[str, np.ndarray]:
    return glyphs.render_glyphs(paths)


@pytest.fixture()
def cache(tmp_path, monkeypatch, rendered) -> list[int]:
    """An empty data cache whose renderings return the module's rendering (copies), counted."""
    monkeypatch.setenv("SIAMNET_DATA", str(tmp_path / "data"))
    monkeypatch.delenv(glyphs.FONTS_ENV, raising=False)
    calls: list[int] = []

    def render(paths):
        calls.append(1)
        return {name: array.copy() for name, array in rendered.items()}

    monkeypatch.setattr(glyphs, "render_glyphs", render)
    return calls


def font_folder_without(tmp_path: Path, paths: dict[str, Path], missing: str) -> Path:
    folder = tmp_path / "fonts"
    folder.mkdir()
    for name, path in paths.items():
        if name != missing:
            os.symlink(path, folder / name)
    return folder


def cached_files(tmp_path: Path) -> tuple[Path, Path]:
    (archive,) = (tmp_path / "data" / "glyphs").glob("glyphs-*.npz")
    return archive, archive.with_name(archive.name + ".sha256")


# --- rendering ---------------------------------------------------------------------------------
def test_two_renderings_are_the_same_bytes(paths, rendered):
    again = glyphs.render_glyphs(paths)
    assert glyphs.archive_bytes(again) == glyphs.archive_bytes(rendered)
    assert glyphs.archive_bytes(rendered) == glyphs.archive_bytes(dict(reversed(rendered.items())))


def test_characters_are_classes_with_twenty_light_on_dark_examples(rendered):
    images, labels, classes = rendered["images"], rendered["labels"], rendered["classes"]
    assert images.dtype == np.uint8 and images.shape[1:] == (1, glyphs.SIZE, glyphs.SIZE)
    assert np.array_equal(np.bincount(labels), np.full(len(classes), glyphs.EXAMPLES))
    assert len(set(classes.tolist())) == len(classes)
    for name, ch in zip(classes.tolist(), rendered["chars"].tolist(), strict=True):
        assert name.endswith(f"/U+{ord(ch):04X}")
    # strokes light on a dark ground, like the built-in digits; nothing cut at the edges
    assert images.mean() < 80
    ring = np.concatenate([images[..., 0, :], images[..., -1, :], images[..., 0], images[..., -1]])
    assert ring.mean() < 3
    assert (images.reshape(len(images), -1).max(1) > 200).all()  # every example has ink


def test_alphabets_are_split_like_omniglots(rendered):
    alphabets = [str(c).split("/")[0] for c in rendered["classes"]]
    split_of = {a.name: list(glyphs.SPLIT_ROLES).index(a.split) for a in glyphs.ALPHABETS}
    for alphabet, split in zip(alphabets, rendered["class_split"].tolist(), strict=True):
        assert split_of[alphabet] == split
    counts = {a: alphabets.count(a) for a in dict.fromkeys(alphabets)}
    evaluation = [a.name for a in glyphs.ALPHABETS if a.split == "evaluation"]
    assert len(evaluation) >= 5
    # 20-way within-alphabet episodes on every evaluation alphabet
    assert all(counts[a] >= 20 for a in evaluation), counts
    assert all(2 <= n <= glyphs.MAX_CHARS for n in counts.values()), counts


def test_every_face_of_an_alphabet_draws_its_characters(rendered, paths):
    cmaps = {name: glyphs.covered(name, path) for name, path in paths.items()}
    faces = {a.name: a.faces for a in glyphs.ALPHABETS}
    for name, ch in zip(rendered["classes"].tolist(), rendered["chars"].tolist(), strict=True):
        alphabet = name.split("/")[0]
        assert all(ord(ch) in cmaps[face] for face in faces[alphabet]), (name, ch)
        assert unicodedata.category(ch)[0] in "LS"
    several = [a for a in glyphs.ALPHABETS if a.split == "evaluation"]
    families = {face: family for family, members in glyphs.FAMILIES.items() for face in members}
    assert all(len({families[f] for f in a.faces}) >= 2 for a in several)


def test_no_two_characters_share_a_shape(rendered, paths):
    face = glyphs.open_face(glyphs.REFERENCE_FACE, paths[glyphs.REFERENCE_FACE])
    shapes = glyphs.shape_vectors(np.stack([glyphs.glyph(face, ch) for ch in rendered["chars"]]))
    similar = shapes @ shapes.T
    np.fill_diagonal(similar, -1.0)
    assert similar.max() < glyphs.SAME_SHAPE
    assert "O" in rendered["chars"] and "o" not in rendered["chars"]  # o is O, smaller
    assert "\u0391" not in rendered["chars"]  # Greek capital alpha is Latin A


def test_examples_of_one_character_differ_and_raw_pixels_are_a_weak_metric(rendered):
    images = rendered["images"].reshape(len(rendered["images"]), -1).astype(np.float32)
    first = images[: glyphs.EXAMPLES]
    assert len({row.tobytes() for row in first}) == glyphs.EXAMPLES
    # nearest neighbour on raw pixels often picks another character (the floor to beat)
    sample = images[:: glyphs.EXAMPLES // 2][:400]
    labels = rendered["labels"][:: glyphs.EXAMPLES // 2][:400]
    d = torch.cdist(torch.from_numpy(sample), torch.from_numpy(sample))
    d.fill_diagonal_(float("inf"))
    right = labels[d.argmin(1).numpy()] == labels
    assert right.mean() < 0.6


# --- the data set and its cache ----------------------------------------------------------------
def test_load_dataset_returns_background_and_evaluation_alphabets(cache, tmp_path, rendered):
    dataset = load_dataset("glyphs")
    assert list(dataset.splits) == ["background", "evaluation"]
    background, evaluation = dataset.splits["background"], dataset.splits["evaluation"]
    assert dataset.train is background and dataset.test is evaluation
    assert not set(background.classes) & set(evaluation.classes)
    assert len(background) + len(evaluation) == len(rendered["labels"])
    for part in (background, evaluation):
        assert part.groups == [c.split("/")[0] for c in part.classes]
        assert torch.equal(part.class_counts(), torch.full((part.num_classes,), glyphs.EXAMPLES))
    index = list(rendered["classes"]).index(evaluation.classes[3])
    first = int(np.flatnonzero(rendered["labels"] == index)[0])
    example = int(torch.nonzero(evaluation.labels == 3)[0])
    assert np.array_equal(evaluation.images[example].numpy(), rendered["images"][first])
    resized = load_dataset("glyphs", (32, 32))
    assert resized.splits["evaluation"].image_size == (32, 32)
    assert len(cache) == 1  # rendered once, then read from the cache


def test_cache_holds_the_archive_and_its_sha256(cache, tmp_path, rendered):
    load_dataset("glyphs")
    archive, sums = cached_files(tmp_path)
    recorded = sums.read_text(encoding="ascii").split()
    assert recorded == [hashlib.sha256(archive.read_bytes()).hexdigest(), archive.name]
    assert archive.read_bytes() == glyphs.archive_bytes(rendered)
    assert [p.name for p in archive.parent.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("damage", ["flipped byte", "truncated", "checksum file missing"])
def test_damaged_cache_is_rendered_again_never_used(cache, tmp_path, damage):
    load_dataset("glyphs")
    archive, sums = cached_files(tmp_path)
    good = archive.read_bytes()
    if damage == "flipped byte":
        data = bytearray(good)
        data[len(data) // 2] ^= 0xFF
        archive.write_bytes(bytes(data))
    elif damage == "truncated":
        archive.write_bytes(good[: len(good) // 3])
    else:
        sums.unlink()
    load_dataset("glyphs")
    assert len(cache) == 2
    assert archive.read_bytes() == good
    assert sums.read_text(encoding="ascii").split()[0] == hashlib.sha256(good).hexdigest()


def test_other_fonts_give_another_cache_file(paths, tmp_path):
    folder = font_folder_without(tmp_path, paths, missing="cmr10.ttf")
    shutil.copy(paths["cmr10.ttf"], folder / "cmr10.ttf")
    copied = glyphs.font_paths(folder)
    assert glyphs.cache_key(copied) == glyphs.cache_key(paths)
    (folder / "cmr10.ttf").write_bytes(paths["cmr10.ttf"].read_bytes() + b"\0")
    assert glyphs.cache_key(glyphs.font_paths(folder)) != glyphs.cache_key(paths)


def test_training_holds_the_evaluation_alphabets_out(cache):
    data = prepare_data(TrainConfig(data="glyphs").resolved())
    dataset = load_dataset("glyphs")
    assert data.unseen is not None and data.test is None
    assert data.unseen.classes == dataset.splits["evaluation"].classes
    assert data.val_protocol == "held-out classes"
    background = set(dataset.splits["background"].classes)
    assert {c.split("@")[0] for c in data.train.classes} <= background
    assert not set(data.val.classes) & set(data.train.classes)


# --- missing and broken fonts ------------------------------------------------------------------
def test_missing_font_is_one_line_naming_it(cache, tmp_path, paths, monkeypatch):
    folder = font_folder_without(tmp_path, paths, missing="STIXGeneralBol.ttf")
    with pytest.raises(DataError) as raised:
        glyphs.load_glyphs(fonts=folder)
    message = str(raised.value)
    assert "\n" not in message
    assert "font STIXGeneralBol.ttf not found" in message and str(folder) in message
    monkeypatch.setenv(glyphs.FONTS_ENV, str(folder))
    with pytest.raises(DataError, match="STIXGeneralBol.ttf"):
        load_dataset("glyphs")
    assert cache == [] and not (tmp_path / "data" / "glyphs").exists()


def test_unreadable_font_is_one_line_naming_it(tmp_path, paths, monkeypatch):
    monkeypatch.setenv("SIAMNET_DATA", str(tmp_path / "data"))
    folder = font_folder_without(tmp_path, paths, missing="cmtt10.ttf")
    (folder / "cmtt10.ttf").write_bytes(b"not a font")
    with pytest.raises(DataError) as raised:
        glyphs.load_glyphs(fonts=folder)
    message = str(raised.value)
    assert "\n" not in message and "font cmtt10.ttf cannot be read" in message
    assert not list((tmp_path / "data").rglob("*.npz"))
