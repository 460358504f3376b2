"""Session fixtures: the shapes files on disk and the `siamnet serve` service started from them
as a real subprocess (with and without a support set and gallery)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from service_process import MAX_UPLOAD_BYTES, Service, ShapeFiles, make_shape_files


@pytest.fixture(scope="session")
def shape_files(tmp_path_factory: pytest.TempPathFactory) -> ShapeFiles:
    return make_shape_files(tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="session")
def service(shape_files: ShapeFiles) -> Iterator[Service]:
    """The service with a support set and a gallery, and an upload cap of 0.5 MB."""
    args = [str(shape_files.checkpoint), "--support", "support", "--gallery", "gallery"]
    args += ["--max-upload-mb", str(MAX_UPLOAD_BYTES / 1e6)]
    svc = Service(args, cwd=shape_files.root)
    yield svc
    assert svc.stop() == 130, "".join(svc.log)
    assert svc.log[-1] == "siamnet: interrupted\n" and "Traceback" not in "".join(svc.log)


@pytest.fixture(scope="session")
def bare_service(shape_files: ShapeFiles) -> Iterator[Service]:
    """The service with neither a support set nor a gallery."""
    svc = Service([str(shape_files.checkpoint), "--device", "cpu"], cwd=shape_files.root)
    yield svc
    assert svc.stop() == 130, "".join(svc.log)
    assert svc.log[-1] == "siamnet: interrupted\n" and "Traceback" not in "".join(svc.log)
