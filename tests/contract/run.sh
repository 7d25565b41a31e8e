#!/usr/bin/env bash
# The API contract, checked by a third-party tool: schemathesis (pinned, from PyPI, in a venv
# under ~/.cache/demeter) against the real daemon, from the daemon's own OpenAPI document, with
# an admin token, over every operation but the event stream, with every check. Zero failures
# or this fails.
#
#   tests/contract/run.sh path/to/demeter [artifacts-dir]
set -euo pipefail

BIN="$(realpath "$1")"
ARTIFACTS="$(realpath -m "${2:-target/contract-artifacts}")"
VERSION=4.32.5
VENV="${HOME}/.cache/demeter/schemathesis-${VERSION}"
REPO="$(cd "$(dirname "$0")/../.." && pwd)"

if [ ! -x "$VENV/bin/st" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==${VERSION}"
fi

mkdir -p "$ARTIFACTS"
ROOT="$(mktemp -d)"
DAEMON=""
cleanup() {
  [ -n "$DAEMON" ] && kill "$DAEMON" 2>/dev/null && wait "$DAEMON" 2>/dev/null
  cp "$ROOT/daemon.log" "$ARTIFACTS/daemon.log" 2>/dev/null || true
  rm -rf "$ROOT"
}
trap cleanup EXIT

TOKEN="contract-admin-token-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
mkdir -p "$ROOT/photos/bench-1"
# Real photos, so sessions, jobs, results, thumbnails and overlays exist to be asked about.
cp "$REPO/../shared/data/real/02_plantcv-docs__original_multi_image.jpg" "$ROOT/photos/bench-1/tray.jpg"
cp "$REPO/../shared/data/real/04_plantcv-docs__2016-05-25_1031.chamber129-camera-01.jpg" "$ROOT/photos/chamber.jpg"
: > "$ROOT/config.toml"

# Many requests without or with wrong credentials are part of the checks: the failed-sign-in
# brake (10 in a row per address by default) would answer the rest 429 and hide them.
DEMETER_CONFIG="$ROOT/config.toml" DEMETER_ADMIN_TOKEN="$TOKEN" DEMETER_FAILED_AUTH_BURST=1000000 \
  DEMETER_STABILITY_WINDOW_MS=300 DEMETER_LOG=info,ort=warn \
  "$BIN" run --watch "$ROOT/photos" --data "$ROOT/data" --listen "127.0.0.1:$PORT" >"$ROOT/daemon.log" 2>&1 &
DAEMON=$!

URL="http://127.0.0.1:$PORT"
# Ready, and both photos processed (python3 rather than curl: on every machine `make` runs on).
URL="$URL" TOKEN="$TOKEN" python3 - <<'PY'
import json, os, time, urllib.request
url, token = os.environ["URL"], os.environ["TOKEN"]
def get(path):
    req = urllib.request.Request(url + path, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.load(r)
deadline = time.monotonic() + 90
while True:
    try:
        sessions = get("/api/v1/sessions")["sessions"]
        if sum(s["summary"]["completed"] + s["summary"]["failed"] for s in sessions) >= 2:
            break
    except OSError:
        pass
    if time.monotonic() > deadline:
        raise SystemExit("the daemon did not process the two photos within 90 s")
    time.sleep(0.2)
PY

# From the temp folder: schemathesis keeps a cache (.schemathesis/) in its working directory.
cd "$ROOT"
"$VENV/bin/st" --config-file "$REPO/tests/contract/schemathesis.toml" run "$URL/api/v1/openapi.json" --url "$URL" \
  -H "Authorization: Bearer $TOKEN" \
  --checks all \
  --exclude-path /api/v1/events \
  --max-examples 30 \
  --seed 1 \
  --report junit --report-dir "$ARTIFACTS" \
  --no-color | tee "$ARTIFACTS/schemathesis.txt"
