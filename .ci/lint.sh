#!/usr/bin/env bash
# Lint: `ruff check` over the repository and mypy over the packages (strict for voice_codecs,
# twiml and bridge.call; a check_untyped_defs baseline for the rest of bridge). Configuration in
# pyproject.toml. Installs what it needs into .venv (the test extras carry ruff and mypy).
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -c 'import mypy, ruff' 2>/dev/null || .venv/bin/pip install -q -e '.[test]'
echo "==> ruff check"
.venv/bin/ruff check .
# mypy cannot follow setuptools' editable-install finder, and run from the checkout the folder
# codecs/ would shadow the standard library's `codecs`: check the packages under their import
# names from a link tree in build/.
echo "==> mypy"
tree="$root/build/lint-src"
rm -rf "$tree" && mkdir -p "$tree"
ln -s "$root/bridge" "$tree/bridge"
ln -s "$root/twiml" "$tree/twiml"
ln -s "$root/codecs" "$tree/voice_codecs"
cd "$tree"
"$root/.venv/bin/mypy" --config-file "$root/pyproject.toml" --cache-dir "$root/build/mypy-cache" -p voice_codecs -p twiml -p bridge
