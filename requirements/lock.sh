#!/bin/sh
# Regenerate the two lock files from pyproject.toml, each in a clean virtual environment:
#   requirements/runtime.txt  every package `pip install .` brings (no test tool)
#   requirements/dev.txt      every package `pip install .[dev]` brings (runtime + tools)
# Versions already locked are kept (they are passed as constraints), so adding a dependency
# does not move the others. `requirements/lock.sh --upgrade` resolves everything afresh.
#   PYTHON=python3.11 sh requirements/lock.sh [--upgrade]
set -eu
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
PIP_VERSION=$(sed -n 's/^PIP_VERSION := //p' Makefile)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

keep=""
if [ "${1:-}" != "--upgrade" ] && [ -f requirements/dev.txt ]; then
    keep="-c requirements/dev.txt"
fi

freeze() {  # venv, target, extra
    "$PYTHON" -m venv "$work/$1"
    "$work/$1/bin/python" -m pip install --quiet "pip==$PIP_VERSION"
    # shellcheck disable=SC2086
    "$work/$1/bin/python" -m pip install --quiet $keep ".$3"
    {
        echo "# Locked by requirements/lock.sh: exactly what \`pip install .$3\` installs."
        echo "# Do not edit by hand; change pyproject.toml and run the script again."
        "$work/$1/bin/python" -m pip freeze --exclude chistone | LC_ALL=C sort -f
    } >"$2.new"
    mv "$2.new" "$2"
}

freeze runtime requirements/runtime.txt ""
freeze dev requirements/dev.txt "[dev]"
echo "lock: wrote requirements/runtime.txt ($(grep -vc '^#' requirements/runtime.txt) packages)" \
     "and requirements/dev.txt ($(grep -vc '^#' requirements/dev.txt) packages)"
