#!/bin/sh
# System packages the test suite uses, checked (and installed when possible) by `make test`:
#   chromium  required: the browser test drives Debian's /usr/bin/chromium
#   nginx     required: the differential suite (tests/adversarial/test_g9_*) compares
#             chistone with nginx proxy_pass
#   redis-server  required: shared state and rate limits run against a real Redis
#             (tests/redis_server.py starts private ones; CI's runs at 127.0.0.1:6379)
#   wrk, libnginx-mod-http-lua  optional: tests/bench measures a real one-second run with wrk
#             (and checks the harness's "wrk not installed" report without it); the benchmark
#             (`make bench`) uses nginx's Lua module
# As root with apt-get, missing packages are installed; otherwise a missing required package
# stops `make test` here with the one command to run. Nothing is skipped for a missing tool.
# CHISTONE_CHROMIUM names another Chromium binary.
set -u

chromium=${CHISTONE_CHROMIUM:-/usr/bin/chromium}
lua_module=/usr/lib/nginx/modules/ngx_http_lua_module.so
have_chromium() { [ -x "$chromium" ] || command -v "$chromium" >/dev/null 2>&1; }
have_nginx() { command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; }
have_redis() { command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ]; }
have_wrk() { command -v wrk >/dev/null 2>&1; }
have_lua() { [ -f "$lua_module" ]; }

required() {
    out=""
    have_chromium || out="$out chromium"
    have_nginx || out="$out nginx"
    have_redis || out="$out redis-server"
    echo "$out"
}
optional() {
    out=""
    have_wrk || out="$out wrk"
    have_lua || out="$out libnginx-mod-http-lua"
    echo "$out"
}

missing="$(required)$(optional)"
[ -z "$missing" ] && exit 0

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "make test: installing Debian's$missing (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    # Never let the nginx package start a system nginx on port 80 while installing (Debian's
    # policy-rc.d convention), and remove the policy afterwards if it was ours.
    policy=/usr/sbin/policy-rc.d
    made_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && made_policy=1
    fi
    timeout 300 apt-get update -qq || echo "make test: apt-get update failed; trying anyway"
    for pkg in $missing; do
        timeout 600 apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null \
            || echo "make test: could not install $pkg"
    done
    [ "$made_policy" = 1 ] && rm -f "$policy"
fi

still="$(required)"
if [ -n "$still" ]; then
    echo "make test needs$still for the browser test (tests/browser), the nginx"
    echo "differential suite (tests/adversarial) and the shared-state tests (redis-server),"
    echo "and found them missing. Install with:"
    echo
    echo "    sudo apt-get install -y$still"
    echo
    exit 1
fi
if ! have_wrk; then
    echo "make test: wrk is not installed; the benchmark harness test checks its" \
         "'wrk not installed' report instead of a real run (sudo apt-get install -y wrk)."
fi
exit 0
