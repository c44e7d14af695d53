#!/usr/bin/env bash
# axe-core (Deque's accessibility engine) from the npm registry into a per-version cache; the
# dashboard's browser tests inject its axe.min.js into the page (tests/e2e/test_dashboard.py).
#   hack/fetch-axe.sh   -> prints the path of axe.min.js
set -euo pipefail
version="4.14.1"
out="${XDG_CACHE_HOME:-$HOME/.cache}/entitle/axe-core-$version"
if [ ! -f "$out/.complete" ]; then
  rm -rf "$out.tmp"
  mkdir -p "$out.tmp"
  (cd "$out.tmp" && npm pack --silent "axe-core@$version" >/dev/null && tar -xzf "axe-core-$version.tgz")
  test -s "$out.tmp/package/axe.min.js"
  touch "$out.tmp/.complete"
  rm -rf "$out"
  mv "$out.tmp" "$out"
fi
echo "$out/package/axe.min.js"
