#!/usr/bin/env bash
# The README's test command again on another Python (voice-bridge promises 3.11 to 3.13), in its
# own venv, when the machine has that version (pyenv or on PATH); otherwise a SKIP line.
set -euo pipefail
cd "$(dirname "$0")/.."
version="$1"
python=""
if command -v "python$version" >/dev/null 2>&1 && "python$version" --version >/dev/null 2>&1; then
    python="$(command -v "python$version")"
elif command -v pyenv >/dev/null 2>&1; then
    found="$(pyenv versions --bare 2>/dev/null | grep -E "^${version//./\\.}(\.[0-9]+)?$" | sort -V | tail -1 || true)"
    [ -n "$found" ] && python="$(pyenv root)/versions/$found/bin/python"
fi
if [ -z "$python" ] || [ ! -x "$python" ]; then
    echo "SKIP  Python $version: not on this machine"
    exit 0
fi
echo "==> the tests on $("$python" --version)"
"$python" -m venv ".venv-$version" && ".venv-$version/bin/pip" install -q -e '.[test]' && ".venv-$version/bin/python" -m pytest -q -p no:cacheprovider
