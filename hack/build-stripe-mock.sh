#!/usr/bin/env bash
# Build stripe-mock (Stripe's own mock of its API, validating requests against Stripe's
# OpenAPI document) from its Go module into a per-version cache. The push tests send
# `entitle usage push --to stripe` through it: the request format is Stripe's, not ours.
#   hack/build-stripe-mock.sh   -> prints the path of the stripe-mock binary
set -euo pipefail
version="v0.203.0"
out="${XDG_CACHE_HOME:-$HOME/.cache}/entitle/stripe-mock-$version"
if [ ! -x "$out/stripe-mock" ]; then
  mkdir -p "$out"
  tmp="$(mktemp -d "$out/build.XXXXXX")"
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && CGO_ENABLED=0 GOBIN="$tmp/bin" GOFLAGS=-mod=mod go install -trimpath -ldflags "-s -w" \
    "github.com/stripe/stripe-mock@$version") >&2
  mv -f "$tmp/bin/stripe-mock" "$out/stripe-mock"
fi
echo "$out/stripe-mock"
