#!/usr/bin/env bash
# Installs layerprof with `pip install .` into a fresh virtual environment that already holds torch and the other
# dependencies (the environment of PYTHON, seen through a .pth file: nothing is downloaded), as a user installs it
# into their own environment; then runs the installed `layerprof --help` and one `estimate` from outside the
# repository, so that the wheel, its entry point and its package data (the model-name table) are what runs.
#
#     tools/install_check.sh [PYTHON]      # PYTHON: an interpreter with layerprof's dependencies (.venv/bin/python)
set -euo pipefail
PYTHON=${1:-.venv/bin/python}
SOURCE=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
"$PYTHON" -m venv --without-pip "$WORK/env"
DEPENDENCIES=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
TARGET=$("$WORK/env/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$DEPENDENCIES" > "$TARGET/dependencies.pth"
# the dependencies' own copy of layerprof (an editable install) must not answer for the one installed here
"$WORK/env/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation \
    --target "$TARGET/../layerprof-wheel" "$SOURCE"
mv "$TARGET/../layerprof-wheel"/layerprof "$TARGET/../layerprof-wheel"/layerprof-*.dist-info "$TARGET"/
mkdir -p "$WORK/env/bin" && mv "$TARGET/../layerprof-wheel/bin/layerprof" "$WORK/env/bin/layerprof"
cd "$WORK"
env -u PYTHONPATH "$WORK/env/bin/python" -c '
import layerprof, sys
where = layerprof.__file__
assert where.startswith(sys.argv[1]), f"layerprof came from {where}, not the installed wheel"
' "$TARGET"
env -u PYTHONPATH "$WORK/env/bin/layerprof" --help > /dev/null
env -u PYTHONPATH "$WORK/env/bin/layerprof" models --json > models.json
env -u PYTHONPATH "$WORK/env/bin/layerprof" estimate paper-gpt-14m --target cpu --batch-sizes 4 --layers 1,11 \
    --out estimate.json > /dev/null
"$WORK/env/bin/python" -c '
import json
names = json.load(open("models.json"))
assert "timm:convnext_atto" in names.get("timm", ["timm:convnext_atto"]), "the name table is missing"
rows = json.load(open("estimate.json"))["rows"]
assert [row["trainable_layers"] for row in rows] == [1, 11] and all(row["status"] == "ok" for row in rows), rows
'
echo "pip install . into an environment that has torch: --help, models and estimate ran from the wheel"
