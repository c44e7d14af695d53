#!/usr/bin/env bash
# Build the helm CLI from its Go module (pinned in hack/helm/go.mod) into a per-version cache.
#   hack/build-helm.sh   -> prints the path of the helm binary
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
version="$(grep -Eo 'helm.sh/helm/v3 v[0-9.]+' "$here/helm/go.mod" | head -1 | sed 's/.* v//')"
out="${XDG_CACHE_HOME:-$HOME/.cache}/entitle/helm-$version"
if [ ! -x "$out/helm" ]; then
  mkdir -p "$out"
  (cd "$here/helm" && CGO_ENABLED=0 go build -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=v$version" -o "$out/helm.tmp" helm.sh/helm/v3/cmd/helm)
  mv "$out/helm.tmp" "$out/helm"
fi
echo "$out/helm"
