"""The service searches a gallery by the gallery's own method (its saved FAISS index, never
rebuilt) and says which; several queries at once get the matches each gets alone."""

from __future__ import annotations

from pathlib import Path

import httpx

from siamnet.checkpoint import load_checkpoint
from siamnet.gallery import IndexSpec, build_gallery
from siamnet.serve.service import ModelService

from service_process import SHAPES, Service, ShapeFiles, assert_same_answer
from shapes_model import shape_set


def indexed_gallery(shape_files: ShapeFiles, folder: Path, spec: IndexSpec) -> Path:
    images, labels = shape_set(12, seed=21)
    names = [f"{SHAPES[k]}_{i}.png" for i, k in enumerate(labels.tolist())]
    build_gallery(
        load_checkpoint(shape_files.checkpoint),
        images,
        [SHAPES[k] for k in labels.tolist()],
        names,
        out=folder,
        index=spec,
    )
    return folder


def test_the_service_searches_by_the_gallerys_own_index(
    shape_files: ShapeFiles, tmp_path: Path
) -> None:
    exact_dir = indexed_gallery(shape_files, tmp_path / "exact", IndexSpec())
    flat_dir = indexed_gallery(shape_files, tmp_path / "flat", IndexSpec(method="flat"))
    ivf_dir = indexed_gallery(
        shape_files, tmp_path / "ivf", IndexSpec(method="ivf-flat", nlist=2, nprobe=2)
    )
    queries = [(shape_files.queries[n].read_bytes(), n) for n in ("bar0", "ring1", "box0")]
    exact = ModelService.load(shape_files.checkpoint, gallery_dir=exact_dir)
    expected = exact.search_many(queries, 5)
    assert exact.search_method() == {"method": "exact"}
    for folder, method in [(flat_dir, {"method": "flat"}), (ivf_dir, {"method": "ivf-flat"})]:
        service = ModelService.load(shape_files.checkpoint, gallery_dir=folder)
        described = service.search_method()
        assert {"method": described["method"]} == method
        assert described.get("nprobe") == (2 if method["method"] == "ivf-flat" else None)
        assert service.info()["gallery"]["search"] == described
        found = service.search_many(queries, 5)  # every cell visited: the exact neighbours
        assert [[m["index"] for m in row] for row in found] == [
            [m["index"] for m in row] for row in expected
        ]
        assert_same_answer(found, expected, 1e-4)
        alone = [service.search_many([query], 5)[0] for query in queries]
        assert_same_answer(found, alone, 1e-4)


def test_search_answers_say_how_they_searched(service: Service, shape_files: ShapeFiles) -> None:
    image = shape_files.queries["box1"]
    answer = httpx.post(
        service.url + "search", files={"image": (image.name, image.read_bytes())}, timeout=30
    ).json()
    assert answer["search"] == {"method": "exact", "nprobe": None, "ef_search": None}
    info = httpx.get(service.url + "info", timeout=30).json()
    assert info["gallery"]["search"] == answer["search"]
