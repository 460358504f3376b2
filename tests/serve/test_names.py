"""Names that are not UTF-8 (a support class folder, a gallery file and the checkpoint named
with the byte 0xff, as Linux allows) are sent as ``\\xff`` text: every answer is JSON, none a
500."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import httpx
import pytest

from service_process import Service, ShapeFiles

pytestmark = pytest.mark.skipif(
    sys.platform != "linux", reason="file names that are not UTF-8 need Linux"
)

BAD = os.fsdecode(b"b\xffr")  # "b\udcffr": how Python holds the name b"b\xffr"


def test_names_that_are_not_utf8_are_sent_escaped(shape_files: ShapeFiles, tmp_path: Path):
    support = tmp_path / "support"
    shutil.copytree(shape_files.support, support)
    (support / "bar").rename(support / BAD)
    gallery = tmp_path / "gallery"
    shutil.copytree(shape_files.gallery_images, gallery)
    first_bar = sorted((gallery / "bar").iterdir())[0]
    first_bar.rename(gallery / "bar" / f"{BAD}.png")
    (gallery / "cross").rename(gallery / BAD)
    checkpoint = tmp_path / f"{BAD}.pt"
    shutil.copy(shape_files.checkpoint, checkpoint)
    svc = Service([checkpoint.name, "--support", "support", "--gallery", "gallery"], tmp_path)
    try:
        with httpx.Client(timeout=30) as http:
            info = http.get(svc.url + "info")
            bar = ("bar.png", shape_files.queries["bar0"].read_bytes(), "image/png")
            classify = http.post(svc.url + "classify", files={"image": bar})
            search = http.post(svc.url + "search", files={"image": bar}, params={"k": 16})
    finally:
        assert svc.stop() == 130, "".join(svc.log)
    assert "Traceback" not in "".join(svc.log)
    assert [r.status_code for r in (info, classify, search)] == [200, 200, 200]
    assert info.json()["checkpoint"] == "b\\xffr.pt"
    assert "b\\xffr" in info.json()["support"]["classes"]
    answer = classify.json()
    assert answer["label"] == answer["best"] == "b\\xffr"
    assert "b\\xffr" in {row["name"] for row in answer["ranking"]}
    matches = search.json()["matches"]
    assert "b\\xffr.png" in {m["file"] for m in matches}
    assert "b\\xffr" in {m["label"] for m in matches}
