"""The package as it is distributed: the version in one place, and a wheel and an sdist built
from the repository that hold what siamnet needs at run time. (`make wheel-check` installs the
wheel into a fresh environment and runs it; that is too slow for the test suite.)"""

from __future__ import annotations

import configparser
import subprocess
import sys
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

import siamnet

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "siamnet"


def _source_files() -> set[str]:
    """Every file of the package in the repository, as ``siamnet/...`` paths."""
    return {
        "siamnet/" + path.relative_to(PACKAGE).as_posix()
        for path in PACKAGE.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }


def test_the_version_is_read_from_the_package_without_importing_it():
    """pyproject.toml's version is `siamnet.__version__`, read by setuptools without importing
    siamnet (nor torch): a build environment has neither installed."""
    code = f"""
import sys

class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("siamnet", "torch"):
            raise ImportError(f"{{name}} imported while reading the version")

sys.meta_path.insert(0, Refuse())
from setuptools.config.pyprojecttoml import read_configuration

print(read_configuration({str(ROOT / "pyproject.toml")!r})["project"]["version"])
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == siamnet.__version__


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The sdist and the wheel, built as `python -m build` builds them (the wheel from the
    sdist), with the build tools of this environment instead of downloaded ones."""
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (sdist,) = out.glob("siamnet-*.tar.gz")
    (wheel,) = out.glob("siamnet-*.whl")
    return sdist, wheel


@pytest.mark.slow
def test_the_wheel_holds_the_package_its_data_and_the_command(dists):
    _, wheel = dists
    version = siamnet.__version__
    assert wheel.name == f"siamnet-{version}-py3-none-any.whl"
    info = f"siamnet-{version}.dist-info"
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        metadata = Parser().parsestr(z.read(f"{info}/METADATA").decode())
        entry_points = configparser.ConfigParser()
        entry_points.read_string(z.read(f"{info}/entry_points.txt").decode())

    # Every module and data file of the package (the web page's static files, py.typed) and
    # nothing else at the top level: no tests, no stray folders.
    package = {name for name in names if not name.startswith(f"{info}/")}
    assert package == _source_files()
    for name in ("py.typed", "serve/static/index.html", "serve/static/app.js"):
        assert f"siamnet/{name}" in package

    assert dict(entry_points["console_scripts"]) == {"siamnet": "siamnet.cli:main"}
    assert metadata["Name"] == "siamnet"
    assert metadata["Version"] == version
    assert metadata["License-Expression"] == "MIT"
    assert metadata["Description-Content-Type"] == "text/markdown"
    assert metadata.get_payload().lstrip().startswith("# siamnet")
    requires = metadata.get_all("Requires-Dist")
    assert any(r.startswith("torch") for r in requires)
    # The server subclasses uvicorn's HTTP/1.1 protocol, so uvicorn is bounded above.
    (uvicorn,) = [r for r in requires if r.startswith("uvicorn")]
    assert "<" in uvicorn.split(";")[0]


@pytest.mark.slow
def test_the_sdist_holds_what_builds_and_tests_the_package(dists):
    sdist, _ = dists
    top = f"siamnet-{siamnet.__version__}"
    with tarfile.open(sdist) as tar:
        names = {name.removeprefix(f"{top}/") for name in tar.getnames()}
    for name in ("PKG-INFO", "pyproject.toml", "README.md", "MANIFEST.in"):
        assert name in names
    assert {"src/" + name for name in _source_files()} <= names
    # The whole test suite, its helpers and the example it runs, not only tests/test_*.py.
    tests = {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "tests").rglob("*.py")
        if "__pycache__" not in path.parts
    }
    assert tests <= names
    assert "examples/blog_post.py" in names
    assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc")]
