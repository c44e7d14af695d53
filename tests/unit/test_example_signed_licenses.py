"""examples/11-signed-licenses/run.sh does what its README says, offline, with the CLI alone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def test_the_signed_licenses_example_runs(tmp_path: Path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "entitle"          # `entitle` as the installed console script would run it
    shim.write_text(f"#!/bin/sh\nexec {sys.executable} -m entitle.cli \"$@\"\n")
    shim.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    done = subprocess.run(["bash", str(ROOT / "examples/11-signed-licenses/run.sh"), str(tmp_path / "work")],
                          env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert "acme-enterprise-2027: valid" in lines
    assert lines.count("acme-enterprise-2027: SignatureInvalid") == 1
    assert "acme-enterprise-2027-copy: SignatureInvalid" in lines
    assert oct((tmp_path / "work/keys/vendor-2027.key").stat().st_mode & 0o777) == "0o600"
