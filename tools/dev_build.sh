#!/usr/bin/env bash
# Incremental development build without pip: configures a CMake build in DIR (default
# build/dev), builds _core, and lays out DIR/site/transformer_ext = the live Python
# sources (symlinked) + the fresh extension. Then:
#   PYTHONPATH=DIR/site python -m pytest tests
# Several developers can build side by side, each in its own DIR.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:-$root/build/dev}
py=${PYTHON:-python3}
mkdir -p "$dir"
if [ ! -f "$dir/build.ninja" ]; then
  cmake -S "$root" -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -Dpybind11_DIR="$($py -m pybind11 --cmakedir)" -DPython_EXECUTABLE="$(command -v $py)" >/dev/null
fi
cmake --build "$dir" --target _core
site="$dir/site/transformer_ext"
mkdir -p "$site"
for f in "$root"/python/transformer_ext/*; do
  ln -sfn "$f" "$site/$(basename "$f")"
done
cp -f "$dir"/_core*.so "$site/"
echo "built: PYTHONPATH=$dir/site"
