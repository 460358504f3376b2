"""Reading image files into uint8 tensors at a model's channels and size."""

from __future__ import annotations

import io
import re
import warnings

import numpy as np
import pytest
import torch
from PIL import EpsImagePlugin, Image, PngImagePlugin, features

from siamnet.errors import ArgumentError, DataError
from siamnet.images import (
    IMAGE_FORMATS,
    format_of,
    list_image_files,
    match_channels,
    open_image,
    read_image,
    read_image_bytes,
    read_images,
    read_support_folder,
)

ACCEPTED = r"expected PNG, JPEG, BMP, GIF, TIFF, WEBP and PPM/PGM/PBM"


def _png(path, array):
    Image.fromarray(array).save(path)
    return path


def test_grey_image_at_its_size_is_read_exactly(tmp_path):
    array = np.arange(28 * 28, dtype=np.uint8).reshape(28, 28)
    image = read_image(_png(tmp_path / "a.png", array), 1, (28, 28))
    assert image.dtype == torch.uint8 and image.shape == (1, 28, 28)
    assert torch.equal(image[0], torch.from_numpy(array))


def test_colour_image_becomes_grey_and_is_resized_bilinear(tmp_path):
    rgb = np.zeros((56, 40, 3), dtype=np.uint8)
    rgb[..., 0] = 200  # pure red: luminance 0.299 * 200 = 59.8
    path = _png(tmp_path / "red.png", rgb)
    image = read_image(path, 1, (28, 20))
    assert image.shape == (1, 28, 20)
    assert int(image.min()) == int(image.max()) == 60
    expected = np.array(Image.open(path).convert("L").resize((20, 28), Image.Resampling.BILINEAR))
    assert torch.equal(image[0], torch.from_numpy(expected))


def test_grey_image_becomes_three_channels(tmp_path):
    array = np.full((10, 12), 77, dtype=np.uint8)
    image = read_image(_png(tmp_path / "g.png", array), 3, (10, 12))
    assert image.shape == (3, 10, 12) and bool((image == 77).all())


def test_jpeg_and_bmp_are_read(tmp_path):
    array = np.full((28, 28, 3), 128, dtype=np.uint8)
    for name in ("a.jpg", "a.bmp"):
        Image.fromarray(array).save(tmp_path / name)
        image = read_image(tmp_path / name, 3, (28, 28))
        assert abs(float(image.float().mean()) - 128) < 2


def test_invert_turns_black_on_white_into_white_on_black(tmp_path):
    array = np.full((28, 28), 255, dtype=np.uint8)
    array[10:18, 12:16] = 0
    path = _png(tmp_path / "pen.png", array)
    plain = read_image(path, 1, (28, 28))
    inverted = read_image(path, 1, (28, 28), invert=True)
    assert torch.equal(inverted, 255 - plain)
    assert int(inverted[0, 14, 13]) == 255 and int(inverted[0, 0, 0]) == 0


def test_bytes_read_like_files(tmp_path):
    array = np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)
    path = _png(tmp_path / "r.png", array)
    assert torch.equal(
        read_image_bytes(path.read_bytes(), 1, (28, 28)), read_image(path, 1, (28, 28))
    )


@pytest.mark.parametrize(
    "content", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\0" * 40]
)
def test_corrupt_bytes_are_refused_with_the_name(content):
    with pytest.raises(DataError, match="upload.png"):
        read_image_bytes(content, 1, (28, 28), name="upload.png")


def test_corrupt_file_names_the_file(tmp_path):
    bad = tmp_path / "broken.png"
    noise = np.random.default_rng(1).integers(0, 256, (28, 28), dtype=np.uint8)
    good = _png(tmp_path / "good.png", noise)
    bad.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])  # a truncated PNG
    with pytest.raises(DataError, match="broken.png"):
        read_image(bad, 1, (28, 28))
    with pytest.raises(DataError, match="no such image file"):
        read_image(tmp_path / "missing.png", 1, (28, 28))


def test_read_images_skips_and_reports_bad_files(tmp_path):
    a = _png(tmp_path / "a.png", np.full((28, 28), 1, dtype=np.uint8))
    bad = tmp_path / "b.png"
    bad.write_text("garbage")
    c = _png(tmp_path / "c.png", np.full((28, 28), 3, dtype=np.uint8))
    images, ok, failures = read_images([a, bad, c], 1, (28, 28))
    assert images.shape == (2, 1, 28, 28)
    assert ok == [a, c]
    assert [int(x) for x in images[:, 0, 0, 0]] == [1, 3]
    assert len(failures) == 1 and failures[0][0] == bad and "b.png" in failures[0][1]


def test_list_image_files_filters_by_suffix_and_hidden(tmp_path):
    for name in ("b.png", "a.JPG", "notes.txt", ".hidden.png"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.png").write_bytes(b"x")
    assert [p.name for p in list_image_files(tmp_path)] == ["a.JPG", "b.png"]
    assert [p.name for p in list_image_files(tmp_path, recursive=True)] == [
        "a.JPG",
        "b.png",
        "c.png",
    ]
    with pytest.raises(DataError, match="expected a folder"):
        list_image_files(tmp_path / "b.png")


def test_support_folder_labels_by_sub_folder(tmp_path):
    for cls, values in {"zeta": (5, 6), "alpha": (1,), "empty": ()}.items():
        (tmp_path / cls).mkdir()
        for v in values:
            _png(tmp_path / cls / f"{v}.png", np.full((8, 8), v, dtype=np.uint8))
    (tmp_path / "zeta" / "bad.png").write_text("not a png")
    images, labels, classes, paths, failures = read_support_folder(tmp_path, 1, (8, 8))
    assert classes == ["alpha", "zeta"]  # "empty" has no images
    assert labels.tolist() == [0, 1, 1]
    assert [int(v) for v in images[:, 0, 0, 0]] == [1, 5, 6]
    assert [p.name for p in paths] == ["1.png", "5.png", "6.png"]
    assert len(failures) == 1 and "bad.png" in failures[0][1]


def test_support_folder_without_class_folders_is_refused(tmp_path):
    _png(tmp_path / "a.png", np.zeros((8, 8), dtype=np.uint8))
    with pytest.raises(DataError, match="one sub-folder of images per class"):
        read_support_folder(tmp_path, 1, (8, 8))


def test_match_channels_both_ways():
    grey = torch.tensor([[[[10]]], [[[200]]]], dtype=torch.uint8)
    rgb = match_channels(grey, 3)
    assert rgb.shape == (2, 3, 1, 1) and rgb[:, :, 0, 0].tolist() == [[10] * 3, [200] * 3]
    red = torch.tensor([200, 0, 0], dtype=torch.uint8).view(1, 3, 1, 1)
    assert int(match_channels(red, 1)) == 60


# --- formats and damaged files -----------------------------------------------------------------
def damaged_avif() -> bytes:
    """A real AVIF whose primary-item box (``pitm``) is renamed: libavif then finds no image,
    which Pillow's AVIF plugin reports as a RuntimeError (not an OSError)."""
    buf = io.BytesIO()
    pixels = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buf, format="AVIF")
    data = buf.getvalue()
    assert data.count(b"pitm") == 1
    return data.replace(b"pitm", b"xitm")


#: The first bytes of an AVIF file: an ``ftyp`` box with the ``avif`` brand.
AVIF_HEADER = b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf" + b"\x00" * 64

EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n%%EOF\n"


@pytest.mark.skipif(not features.check("avif"), reason="this Pillow cannot write AVIF")
def test_damaged_avif_is_a_data_error_not_a_runtime_error(tmp_path):
    path = tmp_path / "photo.png"  # the name does not matter: Pillow reads the content
    path.write_bytes(damaged_avif())
    with pytest.raises(RuntimeError):  # what plain Pillow does with this file
        Image.open(path)
    pattern = rf"^{re.escape(str(path))}: an image in format AVIF; {ACCEPTED}"
    with pytest.raises(DataError, match=pattern) as err:
        read_image(path, 1, (28, 28))
    assert "\n" not in str(err.value)
    with pytest.raises(DataError, match=r"^upload\.png: an image in format AVIF"):
        read_image_bytes(path.read_bytes(), 1, (28, 28), name="upload.png")


def test_other_formats_are_refused_by_their_signature(tmp_path):
    path = tmp_path / "x.jpg"
    path.write_bytes(AVIF_HEADER)
    with pytest.raises(DataError, match=rf"x\.jpg: an image in format AVIF; {ACCEPTED}"):
        read_image(path, 1, (28, 28))
    assert format_of(AVIF_HEADER[:16]) == "AVIF" and format_of(b"\x89PNG\r\n\x1a\n") == "PNG"
    assert format_of(b"plain text here!") is None


def test_eps_is_refused_without_running_anything(tmp_path, monkeypatch):
    calls = []

    def must_not_run(*args, **kwargs):
        calls.append(args)
        raise AssertionError("the EPS plugin ran")

    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", must_not_run)
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", must_not_run)
    path = tmp_path / "drawing.png"
    path.write_bytes(EPS)
    with pytest.raises(DataError, match=rf"drawing\.png: an image in format EPS; {ACCEPTED}"):
        read_image(path, 1, (28, 28))
    with pytest.raises(DataError, match=r"up: an image in format EPS"):
        read_image_bytes(EPS, 1, (28, 28), name="up")
    assert calls == []


def test_any_exception_from_a_decoder_is_a_data_error(tmp_path, monkeypatch):
    path = _png(tmp_path / "ok.png", np.zeros((4, 4), dtype=np.uint8))

    def broken_load(self):
        raise RuntimeError("decoder state corrupted")

    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", broken_load)
    with pytest.raises(
        DataError, match=r"ok\.png: not a readable image \(decoder state corrupted\)"
    ):
        read_image(path, 1, (4, 4))
    images, ok, failures = read_images([path], 1, (4, 4))
    assert ok == [] and images.shape == (0, 1, 4, 4) and "decoder state" in failures[0][1]


def test_empty_and_unknown_files_say_what_they_are(tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.png: empty file, expected an image"):
        read_image(empty, 1, (8, 8))
    text = tmp_path / "notes.png"
    text.write_text("just some words, not pixels")
    with pytest.raises(
        DataError, match=rf"notes\.png: not a readable image \(no known image format; {ACCEPTED}"
    ):
        read_image(text, 1, (8, 8))
    with pytest.raises(DataError, match=r"a folder, expected an image file"):
        read_image(tmp_path, 1, (8, 8))


def bmp_claiming(tmp_path, width: int, height: int):
    """A tiny BMP whose header claims ``width x height`` pixels (no decoding is needed to see
    the size)."""
    buf = io.BytesIO()
    Image.new("L", (4, 4)).save(buf, format="BMP")
    data = bytearray(buf.getvalue())
    data[18:22] = width.to_bytes(4, "little")
    data[22:26] = height.to_bytes(4, "little")
    path = tmp_path / f"huge{width}.bmp"
    path.write_bytes(bytes(data))
    return path


def test_huge_images_are_refused_before_decoding_without_a_warning(tmp_path):
    assert Image.MAX_IMAGE_PIXELS is not None
    side = int((Image.MAX_IMAGE_PIXELS * 1.2) ** 0.5)  # Pillow only warns about this one
    warned = bmp_claiming(tmp_path, side, side)
    refused = bmp_claiming(tmp_path, 3 * side, 3 * side)  # and raises for this one
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(
            DataError,
            match=rf"huge{side}\.bmp: image too large to decode \({side}x{side} pixels\); at most",
        ):
            read_image(warned, 1, (28, 28))
        with pytest.raises(DataError, match=rf"huge{3 * side}\.bmp: image too large to decode"):
            read_image(refused, 1, (28, 28))
    assert [str(w.message) for w in caught] == []


def test_exif_orientation_is_applied(tmp_path):
    array = np.arange(4 * 8, dtype=np.uint8).reshape(4, 8) * 7  # 4 high, 8 wide
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    path = tmp_path / "turned.png"
    Image.fromarray(array).save(path, exif=exif)
    image = read_image(path, 1, (8, 4))  # displayed: 8 high, 4 wide
    expected = np.array(Image.fromarray(array).transpose(Image.Transpose.ROTATE_270))
    assert torch.equal(image[0], torch.from_numpy(expected))
    with open_image(path) as opened:
        assert opened.size == (8, 4)  # the file itself is not turned until read


@pytest.mark.parametrize("suffix", [".tif", ".pgm", ".gif", ".webp"])
def test_every_accepted_format_is_read_exactly(tmp_path, suffix):
    array = np.random.default_rng(2).integers(0, 256, (6, 5), dtype=np.uint8)
    path = tmp_path / f"a{suffix}"
    options = {"lossless": True} if suffix == ".webp" else {}
    Image.fromarray(array).save(path, **options)
    with Image.open(path) as check:
        assert check.format in IMAGE_FORMATS
    assert torch.equal(read_image(path, 1, (6, 5))[0], torch.from_numpy(array))


def test_sizes_below_one_pixel_are_an_argument_error(tmp_path):
    path = _png(tmp_path / "a.png", np.zeros((4, 4), dtype=np.uint8))
    for size in [(0, 4), (4, -1)]:
        with pytest.raises(
            ArgumentError, match=r"image size .*: expected a height and width of at least 1"
        ):
            read_image(path, 1, size)
    with pytest.raises(ArgumentError, match=r"image size \(4\.5, 4\): expected two integers"):
        read_images([path], 1, (4.5, 4))


def test_uploads_read_like_their_8bit_opaque_version():
    array = np.random.default_rng(4).integers(0, 256, (9, 7), dtype=np.uint8)

    def encoded(image: Image.Image, fmt: str = "PNG") -> bytes:
        buf = io.BytesIO()
        image.save(buf, format=fmt)
        return buf.getvalue()

    plain = read_image_bytes(encoded(Image.fromarray(array)), 1, (9, 7))
    assert torch.equal(plain[0], torch.from_numpy(array))
    wide = Image.fromarray(array.astype(np.uint16) * 257)  # mode I;16
    assert torch.equal(read_image_bytes(encoded(wide), 1, (9, 7)), plain)
    floats = Image.fromarray(array.astype(np.float32) / 255)  # mode F
    assert torch.equal(read_image_bytes(encoded(floats, "TIFF"), 1, (9, 7)), plain)
    ink = np.dstack([np.zeros((9, 7, 3), np.uint8), 255 - array])  # black ink, alpha = darkness
    assert torch.equal(read_image_bytes(encoded(Image.fromarray(ink, "RGBA")), 1, (9, 7)), plain)


def _bands(height: int, width: int) -> np.ndarray:
    """A grey image of three vertical bands: 30 on the left quarter, 220 on the right quarter
    and 128 in the middle half."""
    array = np.full((height, width), 128, dtype=np.uint8)
    array[:, : width // 4] = 30
    array[:, width - width // 4 :] = 220
    return array


def test_wide_image_is_cropped_not_squeezed(tmp_path):
    path = _png(tmp_path / "wide.png", _bands(40, 160))  # 4:1; the centre half is 80 wide
    image = read_image(path, 1, (20, 20))
    # the shorter side goes to 20 (scale 1/2), the centre 40x40 of the original is kept: all
    # of it lies in the middle band, so the side bands are gone and nothing is squeezed
    assert image.shape == (1, 20, 20) and bool((image == 128).all())
    stretched = read_image(path, 1, (20, 20), resize="stretch")
    assert int(stretched[0, :, 0].max()) < 60 and int(stretched[0, :, -1].min()) > 190


def test_tall_image_keeps_its_centre_rows(tmp_path):
    path = _png(tmp_path / "tall.png", _bands(40, 160).T.copy())  # 1:4, bands across
    image = read_image(path, 1, (10, 10))
    assert bool((image == 128).all())


def test_pair_size_keeps_the_aspect_of_the_target(tmp_path):
    # 100x100 into 20 high by 40 wide: the centre 50x100 rows are kept, scaled by 0.4
    array = np.zeros((100, 100), dtype=np.uint8)
    array[25:75] = 200  # the rows that survive
    image = read_image(_png(tmp_path / "sq.png", array), 1, (20, 40))
    assert image.shape == (1, 20, 40)
    assert bool((image[:, 1:-1] == 200).all())  # no black rows (first and last blend at most)
    expected = Image.fromarray(array).resize(
        (40, 20), Image.Resampling.BILINEAR, box=(0, 25, 100, 75)
    )
    assert torch.equal(image[0], torch.from_numpy(np.array(expected)))


def test_image_at_the_target_size_is_untouched_in_either_mode(tmp_path):
    array = np.random.default_rng(0).integers(0, 256, (12, 30), dtype=np.uint8)
    path = _png(tmp_path / "same.png", array)
    for resize in ("crop", "stretch"):
        assert torch.equal(read_image(path, 1, (12, 30), resize=resize)[0], torch.from_numpy(array))


def test_colour_stays_colour_when_cropped(tmp_path):
    rgb = np.zeros((30, 90, 3), dtype=np.uint8)
    rgb[:, :30] = (255, 0, 0)
    rgb[:, 30:60] = (0, 200, 0)
    rgb[:, 60:] = (0, 0, 255)
    data = io.BytesIO()
    Image.fromarray(rgb).save(data, format="PNG")
    image = read_image_bytes(data.getvalue(), 3, (15, 15))  # the green middle third
    assert image.shape == (3, 15, 15)
    inner = image[:, :, 1:-1]  # the edge columns may blend with the neighbouring bands
    assert bool((inner[0] == 0).all() and (inner[1] == 200).all() and (inner[2] == 0).all())


def test_unknown_resize_mode_is_one_line():
    with pytest.raises(ArgumentError, match=r"resize 'squash': expected one of crop, stretch"):
        read_image("nothing.png", 1, (8, 8), resize="squash")


def test_support_folder_and_many_files_crop_too(tmp_path):
    (tmp_path / "s" / "a").mkdir(parents=True)
    wide = _png(tmp_path / "s" / "a" / "w.png", _bands(40, 160))
    images, _, _, _, _ = read_support_folder(tmp_path / "s", 1, (20, 20))
    assert bool((images == 128).all())
    many, _, _ = read_images([wide], 3, (20, 20))
    assert many.shape == (1, 3, 20, 20) and bool((many == 128).all())


def test_match_channels_equals_pillow_luminance_on_every_colour_tried():
    rgb = np.random.default_rng(1).integers(0, 256, (1, 50_000, 3), dtype=np.uint8)
    pillow = np.asarray(Image.fromarray(rgb).convert("L"))
    tensor = torch.from_numpy(rgb).permute(2, 0, 1)[None].contiguous()
    assert torch.equal(match_channels(tensor, 1)[0, 0], torch.from_numpy(pillow.copy()))


@pytest.mark.parametrize("size", [(105, 103), (103, 105), (97, 61), (300, 299)])
def test_a_crop_never_reaches_past_the_image(size):
    from siamnet.images import crop_box, fit_image

    for target in [(32, 32), (28, 28), (64, 48), (17, 31)]:
        left, top, right, bottom = crop_box(size, target)
        assert 0 <= left <= right <= size[0] and 0 <= top <= bottom <= size[1]
        out = fit_image(Image.new("RGB", size), target)
        assert out.size == (target[1], target[0])


def _photo(side_h: int, side_w: int, seed: int = 0) -> np.ndarray:
    """A smooth colour photo-like array ``[H, W, 3]``: gradients and coarse noise."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(0, 30, (side_h // 16 + 1, side_w // 16 + 1, 3))
    noise = noise.repeat(16, 0).repeat(16, 1)[:side_h, :side_w]
    ramp = np.linspace(0, 120, side_w)[None, :, None]
    return np.clip(60 + ramp + noise, 0, 255).astype(np.uint8)


def _full_decode(path, size, resize="crop"):
    """The image read without reduced-scale decoding: decoded whole, then resampled once."""
    from siamnet.images import fit_image

    with Image.open(path) as image:
        image.load()
        return np.array(fit_image(image.convert("RGB"), size, resize))


@pytest.mark.parametrize("shape", [(384, 384), (400, 720), (720, 400)])
def test_large_jpegs_decode_at_a_reduced_scale_close_to_the_whole_decode(tmp_path, shape):
    path = tmp_path / "big.jpg"
    Image.fromarray(_photo(*shape)).save(path, quality=92)
    image = read_image(path, 3, (96, 96))
    with Image.open(path) as opened:  # what libjpeg gives at the scale chosen
        opened.draft(None, (opened.size[0] // 2, opened.size[1] // 2))
        assert opened.size[0] < shape[1]  # the file does allow a reduced decode
    whole = torch.from_numpy(_full_decode(path, (96, 96))).permute(2, 0, 1)
    assert image.shape == whole.shape == (3, 96, 96)
    assert not torch.equal(image, whole)  # a reduced-scale decode took place
    diff = (image.int() - whole.int()).abs().float()
    assert diff.mean() < 2 and diff.max() < 40  # and it is the same picture
    assert torch.equal(read_image_bytes(path.read_bytes(), 3, (96, 96)), image)


def test_small_jpegs_and_other_formats_are_decoded_whole(tmp_path):
    array = _photo(380, 380)
    Image.fromarray(array).save(tmp_path / "small.jpg", quality=92)  # under four times 96
    Image.fromarray(_photo(384, 384)).save(tmp_path / "big.png")
    for name in ("small.jpg", "big.png"):
        whole = torch.from_numpy(_full_decode(tmp_path / name, (96, 96))).permute(2, 0, 1)
        assert torch.equal(read_image(tmp_path / name, 3, (96, 96)), whole)


def test_reduced_scale_decoding_respects_exif_orientation(tmp_path):
    upright = _photo(800, 480)  # tall as seen
    stored = np.ascontiguousarray(np.rot90(upright, 1))  # stored on its side: 480 tall, 800 wide
    exif = Image.Exif()
    exif[0x0112] = 6  # turn 90° clockwise to view
    Image.fromarray(stored).save(tmp_path / "side.jpg", quality=95, exif=exif)
    Image.fromarray(upright).save(tmp_path / "up.jpg", quality=95)
    side = read_image(tmp_path / "side.jpg", 3, (96, 48))
    up = read_image(tmp_path / "up.jpg", 3, (96, 48))
    assert side.shape == up.shape == (3, 96, 48)
    assert (side.int() - up.int()).abs().float().mean() < 3
