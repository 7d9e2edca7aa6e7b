#!/bin/sh
# System packages the test suite uses, checked (and installed when possible) by `make test`:
#   chromium  required: the browser test drives Debian's /usr/bin/chromium (never skipped)
#   wrk       optional: tests/bench measures a real one-second run with it, and checks the
#             harness's "wrk not installed" report without it
# As root with apt-get, missing packages are installed; otherwise a missing Chromium stops
# `make test` here with the one command to run. CHISTONE_CHROMIUM names another binary.
set -u

chromium=${CHISTONE_CHROMIUM:-/usr/bin/chromium}
have_chromium() { [ -x "$chromium" ] || command -v "$chromium" >/dev/null 2>&1; }
have_wrk() { command -v wrk >/dev/null 2>&1; }

missing=""
have_chromium || missing="$missing chromium"
have_wrk || missing="$missing wrk"
[ -z "$missing" ] && exit 0

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "make test: installing Debian's$missing (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    timeout 300 apt-get update -qq || echo "make test: apt-get update failed; trying anyway"
    for pkg in $missing; do
        timeout 600 apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null \
            || echo "make test: could not install $pkg"
    done
fi

if ! have_chromium; then
    echo "make test needs Chromium for the browser test (tests/browser) and found none at" \
         "$chromium. Install it with:"
    echo
    echo "    sudo apt-get install -y chromium"
    echo
    exit 1
fi
if ! have_wrk; then
    echo "make test: wrk is not installed; the benchmark harness test checks its" \
         "'wrk not installed' report instead of a real run (sudo apt-get install -y wrk)."
fi
exit 0
