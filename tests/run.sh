#!/usr/bin/env bash
# The test entry point: makes sure Debian's chromium is there for the real-browser test, then runs
# pytest on the whole suite (extra arguments go to pytest).  Exits non-zero when a test fails.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CHROMIUM=/usr/bin/chromium

if [ ! -x "$CHROMIUM" ]; then
    if [ "$(id -u)" -eq 0 ]; then
        as_root=()
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        as_root=(sudo -n)
    else
        echo "tests/run.sh: the browser test needs Debian's chromium at $CHROMIUM, which is missing," >&2
        echo "and this user can neither run apt-get as root nor use sudo without a password." >&2
        echo "Install it once with:  sudo apt-get install -y chromium chromium-driver" >&2
        echo "or run the suite without the browser test:  python -m pytest -q -m 'not e2e'" >&2
        exit 1
    fi
    echo "tests/run.sh: installing Debian's chromium for the browser test (apt-get) ..." >&2
    export DEBIAN_FRONTEND=noninteractive
    ${as_root[@]+"${as_root[@]}"} apt-get update -qq >/dev/null
    ${as_root[@]+"${as_root[@]}"} apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
    if [ ! -x "$CHROMIUM" ]; then
        echo "tests/run.sh: apt-get finished but $CHROMIUM is still missing (is this Debian?)" >&2
        exit 1
    fi
fi

PYTHON=python
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
exec "$PYTHON" -m pytest -q "$@"
