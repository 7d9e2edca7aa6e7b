#!/usr/bin/env bash
# Builds the chi oracle: go-chi v5's own router (tree.go, mux.go, context.go, chain.go,
# chi.go, copied from a chi checkout) behind a small JSON-lines driver (main.go).
# Usage: build.sh CHI_GIT_DIR [OUT_DIR]   (needs Go >= 1.19, e.g. Debian's golang-1.19-go)
# The few calls chi makes to Go >= 1.21 library functions are replaced by compat.go's.
set -euo pipefail
chi_git=${1:?"usage: build.sh CHI_GIT_DIR [OUT_DIR]"}
out=${2:-/tmp/chi-oracle}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out/chi"
for f in tree.go context.go mux.go chain.go chi.go; do
  git -C "$chi_git" show "HEAD:$f" > "$out/chi/$f"
done
cp "$here/compat.go" "$out/chi/compat.go"
cp "$here/main.go" "$out/main.go"
printf 'module chioracle\n\ngo 1.19\n' > "$out/go.mod"
python3 - "$out/chi" <<'PY'
import re, sys
d = sys.argv[1]
def edit(name, fn):
    path = f"{d}/{name}"
    text = fn(open(path).read())
    open(path, "w").write(text)
edit("tree.go", lambda s: s.replace("slices.Contains(", "slicesContains(")
     .replace("min(len(k1), len(k2))", "minInt(len(k1), len(k2))")
     .replace("mws := slices.Concat(parentMw, r.Middlewares())",
              "mws := append(append([]func(http.Handler) http.Handler{}, parentMw...), "
              "r.Middlewares()...)")
     .replace('\t"slices"\n', ""))
edit("context.go", lambda s: re.sub(r"slices\.Clone\(([^)]*)\)", r"append(\1[:0:0], \1...)", s)
     .replace('\t"slices"\n', ""))
edit("mux.go", lambda s: s.replace(
    "\t\tfor i, key := range rctx.URLParams.Keys {\n"
    "\t\t\tvalue := rctx.URLParams.Values[i]\n"
    "\t\t\tr.SetPathValue(key, value)\n"
    "\t\t}\n"
    "\t\tr.Pattern = rctx.RoutePattern()\n", ""))
PY
(cd "$out" && GOFLAGS=-mod=mod GOPROXY=off go build -o oracle .)
echo "$out/oracle"
