#!/usr/bin/env bash
# Build the helm CLI from its Go module (pinned in hack/helm/go.mod) into a per-version cache.
#   hack/build-helm.sh   -> prints the path of the helm binary
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
version="$(grep -Eo 'helm.sh/helm/v3 v[0-9.]+' "$here/helm/go.mod" | head -1 | sed 's/.* v//')"
# Like helm's own Makefile: the default Kubernetes version (helm template/lint) is the
# client-go minor helm was built with, not the library's fallback v1.20.
k8s_minor="$(grep -Eo 'k8s.io/client-go v0\.[0-9]+' "$here/helm/go.mod" | head -1 | sed 's/.*v0\.//')"
out="${XDG_CACHE_HOME:-$HOME/.cache}/entitle/helm-$version-k8s1.$k8s_minor"
if [ ! -x "$out/helm" ]; then
  mkdir -p "$out"
  # A temp name of our own: two builds at once (CI and a test, two checkouts) must not
  # write one file; the last rename wins and both results are the same binary.
  tmp="$(mktemp "$out/helm.XXXXXX")"
  trap 'rm -f "$tmp"' EXIT
  (cd "$here/helm" && CGO_ENABLED=0 go build -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=v$version \
      -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$k8s_minor \
      -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$k8s_minor" -o "$tmp" helm.sh/helm/v3/cmd/helm) >&2
  chmod +x "$tmp"
  mv -f "$tmp" "$out/helm"
fi
echo "$out/helm"
