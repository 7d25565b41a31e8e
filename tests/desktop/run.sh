#!/usr/bin/env bash
# The desktop app end to end: a private D-Bus session bus and a virtual X display around
# test_desktop.py (Debian's python3, which has python3-dbus-next). Usage: tests/desktop/run.sh PATH/TO/demeter-desktop ARTIFACT_DIR
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# The bus starts inside the display, so services it activates (portals) see DISPLAY too.
exec xvfb-run --auto-servernum --server-args="-screen 0 1280x900x24" \
  dbus-run-session -- /usr/bin/python3 -u "$here/test_desktop.py" "$@"
