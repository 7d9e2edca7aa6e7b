#!/bin/sh
# Install the benchmark's system tools when they are missing: wrk, nginx, nginx's Lua module.
# Uses apt-get (Debian/Ubuntu) and only when running as root; otherwise, or when a package
# cannot be installed, prints what is still missing. Exit status: 0 if everything is present
# afterwards, 1 if something is still missing (bench/run.py then skips the scenarios needing it).
#
# `install_tools.sh --profiler` instead installs py-spy (bench/profile_gateway.py) into the
# project's venv with pip (PYTHON overrides which interpreter's environment) and valgrind
# (bench/instructions.py) with apt-get when root, and nothing else.
set -u

LUA_MODULE=/usr/lib/nginx/modules/ngx_http_lua_module.so
PY_SPY=py-spy==0.4.3

if [ "${1:-}" = "--profiler" ]; then
    here=$(cd "$(dirname "$0")" && pwd)
    py=${PYTHON:-$here/../.venv/bin/python}
    status=0
    if ! command -v valgrind >/dev/null 2>&1; then  # bench/instructions.py
        if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
            timeout 300 apt-get update -qq
            DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq valgrind \
                >/dev/null || { echo "install_tools: could not install valgrind"; status=1; }
        else
            echo "install_tools: valgrind is missing: sudo apt-get install -y valgrind"
            status=1
        fi
    fi
    if [ -x "$(dirname "$py")/py-spy" ]; then
        echo "install_tools: py-spy is present."
        exit $status
    fi
    echo "install_tools: installing $PY_SPY with $py -m pip"
    if timeout 300 "$py" -m pip install -q "$PY_SPY"; then
        exit $status
    fi
    echo "install_tools: could not install $PY_SPY"
    exit 1
fi

have_wrk() { command -v wrk >/dev/null 2>&1; }
have_nginx() { command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; }
have_lua() { [ -f "$LUA_MODULE" ]; }

missing() {
    out=""
    have_wrk || out="$out wrk"
    have_nginx || out="$out nginx"
    have_lua || out="$out libnginx-mod-http-lua"
    echo "$out"
}

wanted=$(missing)
if [ -z "$wanted" ]; then
    echo "install_tools: wrk, nginx and the nginx Lua module are present."
    exit 0
fi

if [ "$(id -u)" != "0" ]; then
    echo "install_tools: not root; cannot install:$wanted"
    echo "install_tools: run as root, or: sudo apt-get install -y$wanted"
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_tools: no apt-get on this system; install by hand:$wanted"
    exit 1
fi

# Never let the packages start a system nginx on port 80 while installing (Debian's
# policy-rc.d convention); only when no policy is in place already, and removed afterwards.
policy=/usr/sbin/policy-rc.d
made_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && made_policy=1
fi
cleanup() { [ "$made_policy" = 1 ] && rm -f "$policy"; }
trap cleanup EXIT

echo "install_tools: installing:$wanted"
export DEBIAN_FRONTEND=noninteractive
timeout 300 apt-get update -qq || echo "install_tools: apt-get update failed; trying anyway"
for pkg in $wanted; do
    if ! timeout 300 apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null; then
        echo "install_tools: could not install $pkg"
    fi
done

still=$(missing)
if [ -n "$still" ]; then
    echo "install_tools: still missing:$still"
    exit 1
fi
echo "install_tools: wrk, nginx and the nginx Lua module are present."
exit 0
