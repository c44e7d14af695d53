#!/usr/bin/env bash
# Regenerate constraints.txt: every runtime dependency of the image, pinned, resolved in a clean
# venv from pyproject.toml. The Dockerfile builds with --constraint constraints.txt, so the same
# source always builds the same image; tests/unit/test_dockerfile.py fails when a dependency of
# pyproject.toml is missing from it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
venv="$(mktemp -d)"
trap 'rm -rf "$venv"' EXIT
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet .
{ echo "# Runtime dependencies of the image, pinned (hack/lock.sh regenerates this file)."
  "$venv/bin/pip" freeze --exclude entitle; } > constraints.txt
echo "wrote constraints.txt ($(grep -vc '^#' constraints.txt) pins)"
