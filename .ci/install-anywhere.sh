#!/usr/bin/env bash
# `pip install .` (not editable) into a fresh venv, then `voice-bridge demo` from an empty directory
# outside the checkout, with none of the bridge's environment variables set. Passes when the demo
# exits 0 and its report says the caller's question was heard by the agent and the agent's answer
# by the caller. About 30-60 s (the venv's dependencies come from the package index or its cache).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=$(mktemp -d "${TMPDIR:-/tmp}/install-anywhere.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

python3 -m venv "$WORK/venv"
if ! "$WORK/venv/bin/pip" install -q --disable-pip-version-check "$ROOT" >"$WORK/pip.log" 2>&1; then
  grep -v "^WARNING: Location 'file:" "$WORK/pip.log" | tail -25 | sed 's/^/    | /'
  echo "FAIL  install-anywhere: pip install . into a fresh venv failed" >&2
  exit 1
fi
rm -rf "$ROOT/build"  # setuptools' in-tree build folder
mkdir "$WORK/empty"
cd "$WORK/empty"
clean_env=()
for name in $(env | sed -n 's/^\(\(VOICE_BRIDGE\|TWILIO\|AZURE\|OPENAI\)_[A-Za-z0-9_]*\)=.*/\1/p;s/^\(PORT\)=.*/\1/p'); do clean_env+=(-u "$name"); done
if ! env "${clean_env[@]}" "$WORK/venv/bin/voice-bridge" demo --speed 4 --log-level warning >"$WORK/demo.log" 2>&1; then
  sed 's/^/    | /' "$WORK/demo.log"
  echo "FAIL  install-anywhere: voice-bridge demo from an empty directory failed" >&2
  exit 1
fi
sed 's/^/    /' "$WORK/demo.log"
for line in "question heard by agent  yes" "answer heard by caller   yes"; do
  grep -qF -- "$line" "$WORK/demo.log" || { echo "FAIL  install-anywhere: the report lacks '$line'" >&2; exit 1; }
done
[[ -z "$(ls -A "$WORK/empty")" ]] || { echo "FAIL  install-anywhere: the demo wrote into the directory it ran in" >&2; exit 1; }
echo "PASS  install-anywhere: the wheel installed in a fresh venv runs the demo from an empty directory"
