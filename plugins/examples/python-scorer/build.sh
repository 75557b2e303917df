#!/usr/bin/env bash
# Builds the python-scorer plugin into a WebAssembly component:
#   plugins/examples/python-scorer/build.sh [OUT.wasm]
# Default output: $CARGO_TARGET_DIR (or <repo>/target)/wasm32-wasip2/release/python_scorer.wasm,
# beside the Rust plugins. Needs componentize-py (pip install componentize-py==0.25.1).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
target="${CARGO_TARGET_DIR:-$repo/target}"
out="${1:-$target/wasm32-wasip2/release/python_scorer.wasm}"

if ! command -v componentize-py >/dev/null 2>&1; then
  echo "componentize-py not found: pip install componentize-py==0.25.1" >&2
  exit 3
fi

# The narrowed world (wit/world.wit) with the contract as its dependency.
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/wit/deps"
cp "$here/wit/world.wit" "$work/wit/"
cp -r "$repo/wit/crm@0.1.0" "$work/wit/deps/crm"
cp "$here/app.py" "$work/"

mkdir -p "$(dirname "$out")"
cd "$work"
componentize-py -d wit -w python-scorer componentize app -o "$out.tmp"
mv "$out.tmp" "$out"
echo "built $out ($(stat -c %s "$out") bytes)"
