#!/usr/bin/env bash
# The vendor signs, the customer verifies, tampering and renaming are caught -- offline, with
# the entitle CLI alone. Usage: bash run.sh [WORKDIR]   (keys go to WORKDIR, default a temp dir)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
work="${1:-$(mktemp -d)}"

echo "# vendor: a signing key (the .key never leaves the vendor)"
entitle license keygen --key-id vendor-2027 --out "$work/keys"

echo "# vendor: sign the license"
entitle license sign --key "$work/keys/vendor-2027.key" -f "$here/license.yaml" > "$work/signed.yaml"
grep -A2 "signature:" "$work/signed.yaml"

echo "# customer: verify with the vendor's public key (the operator does the same on apply)"
entitle license verify --public-key "$work/keys/vendor-2027.pub" -f "$work/signed.yaml"

echo "# customer raises their own cap: caught"
sed 's/max: 40/max: 400/' "$work/signed.yaml" > "$work/tampered.yaml"
if entitle license verify --public-key "$work/keys/vendor-2027.pub" -f "$work/tampered.yaml"; then
  echo "tampering was not caught" >&2; exit 1
fi

echo "# customer copies it under another name to stack it twice: caught"
sed 's/name: acme-enterprise-2027/name: acme-enterprise-2027-copy/' "$work/signed.yaml" > "$work/copy.yaml"
if entitle license verify --public-key "$work/keys/vendor-2027.pub" -f "$work/copy.yaml"; then
  echo "the renamed copy was not caught" >&2; exit 1
fi
echo "# done: signed one is valid, tampered and renamed are not"
