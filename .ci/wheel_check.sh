#!/usr/bin/env bash
# The package as users get it: build the wheel and the sdist into dist/ (the wheel is built from
# the sdist, so both are checked), check their metadata with twine, install the wheel (not
# editable) into a fresh virtual environment and run the command line from it.
#
#   .ci/wheel_check.sh        (or `make wheel-check`)
#
# BUILD_PYTHON: the interpreter that builds and checks (default .venv/bin/python; build and twine
# are installed into it when missing). PYTHON: the interpreter the fresh environment is made
# from (default python3). TORCH: the PyTorch requirement installed first, so that pip does not
# pull a CUDA build (default torch==2.13.0).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_PYTHON=${BUILD_PYTHON:-.venv/bin/python}
PYTHON=${PYTHON:-python3}
TORCH=${TORCH:-torch==2.13.0}

say() { echo "wheel-check: [${SECONDS}s] $*"; }

if ! "$BUILD_PYTHON" -c "import build, twine" 2>/dev/null; then
  "$BUILD_PYTHON" -m pip install --quiet "build>=1.2" "twine>=6"
fi

# Only this project's old artefacts are removed from dist/.
mkdir -p dist
rm -f dist/siamnet-*.whl dist/siamnet-*.tar.gz
say "building the sdist and the wheel"
"$BUILD_PYTHON" -m build --outdir dist . >dist/build.log 2>&1 || {
  cat dist/build.log
  exit 1
}
wheels=(dist/siamnet-*.whl)
sdists=(dist/siamnet-*.tar.gz)
if [ "${#wheels[@]}" -ne 1 ] || [ "${#sdists[@]}" -ne 1 ]; then
  say "expected one wheel and one sdist in dist/, found: ${wheels[*]} ${sdists[*]}" >&2
  exit 1
fi
wheel=$(cd dist && pwd)/$(basename "${wheels[0]}")
"$BUILD_PYTHON" -m twine check --strict "$wheel" "${sdists[0]}"

# The version the build gave the package (from siamnet.__version__, see pyproject.toml).
built_version=$(basename "$wheel" | cut -d- -f2)

work=$(mktemp -d)
# Removing the environment (PyTorch's thousands of files) takes minutes on a slow disk: it is
# done in the background, after the checks have answered.
trap 'rm -rf "$work" >/dev/null 2>&1 &' EXIT
say "making a fresh environment and installing $TORCH into it"
"$PYTHON" -m venv "$work/venv"
bin=$work/venv/bin
"$bin/python" -m pip install --quiet --disable-pip-version-check "$TORCH"
say "installing $(basename "$wheel") and its dependencies"
"$bin/python" -m pip install --quiet --disable-pip-version-check "$wheel"

say "running siamnet from it"
# From an empty folder, so that nothing of the repository can be imported by accident.
cd "$work"
"$bin/siamnet" --help >help.txt
grep -q "usage: siamnet" help.txt || {
  cat help.txt
  say "siamnet --help printed no usage line" >&2
  exit 1
}
"$bin/siamnet" data info digits
reported=$("$bin/siamnet" --version)
[ "$reported" = "siamnet $built_version" ] || {
  say "siamnet --version says '$reported', the wheel is $built_version" >&2
  exit 1
}
"$bin/python" - "$built_version" "$work/venv" <<'EOF'
import sys
from importlib import metadata, resources
from pathlib import Path

import siamnet

built, venv = sys.argv[1], Path(sys.argv[2]).resolve()
where = Path(siamnet.__file__).resolve()
assert venv in where.parents, f"siamnet imported from {where}, not from the installed wheel"
versions = {"siamnet.__version__": siamnet.__version__, "metadata": metadata.version("siamnet")}
assert set(versions.values()) == {built}, f"wheel {built}, installed {versions}"
package = resources.files("siamnet")
missing = [
    name
    for name in ("py.typed", "serve/static/index.html", "serve/static/app.js", "serve/static/style.css")
    if not package.joinpath(name).is_file()
]
assert not missing, f"not installed: {missing}"
print(f"wheel-check: siamnet {siamnet.__version__} installed from the wheel at {where.parent}")
EOF
say "passed in ${SECONDS}s"
