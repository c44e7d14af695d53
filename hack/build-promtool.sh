#!/usr/bin/env bash
# Build promtool from the Prometheus Go module (pinned in hack/promtool/go.mod) into a
# per-version cache, like helm: CI runs `promtool check rules` and `promtool test rules`
# on the chart's PrometheusRule (tests/unit/test_alert_rules.py).
#   hack/build-promtool.sh   -> prints the path of the promtool binary
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
version="$(grep -Eo 'github.com/prometheus/prometheus v[0-9.]+' "$here/promtool/go.mod" | head -1 | sed 's/.* v//')"
out="${XDG_CACHE_HOME:-$HOME/.cache}/entitle/promtool-$version"
if [ ! -x "$out/promtool" ]; then
  mkdir -p "$out"
  # A temp name of our own: two builds at once must not write one file.
  tmp="$(mktemp "$out/promtool.XXXXXX")"
  trap 'rm -f "$tmp"' EXIT
  (cd "$here/promtool" && CGO_ENABLED=0 go build -trimpath -tags netgo \
    -ldflags "-s -w" -o "$tmp" github.com/prometheus/prometheus/cmd/promtool) >&2
  chmod +x "$tmp"
  mv -f "$tmp" "$out/promtool"
fi
echo "$out/promtool"
