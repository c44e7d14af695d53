"""Processes whose wall clock is off by a given number of seconds, as on a cluster whose NTP
drifted: Debian's libfaketime preloaded, with the monotonic clock left alone (it is what the
protocols under test measure durations with; NTP does not move it either).

libfaketime 0.9.10 (bookworm) has two bugs that would break a Python process: faking the
monotonic clock too hangs every lock wait with a timeout, and not faking it answers EINVAL to
``time.sleep`` (an absolute monotonic clock_nanosleep). faketime_sleepfix.c, preloaded first,
sends monotonic sleeps straight to the kernel; it is compiled once per source version."""

from __future__ import annotations

import glob
import hashlib
import subprocess
from pathlib import Path

SHIM_SOURCE = Path(__file__).with_name("faketime_sleepfix.c")


def _shim(cache: Path) -> Path:
    digest = hashlib.sha256(SHIM_SOURCE.read_bytes()).hexdigest()[:12]
    built = cache / f"faketime-sleepfix-{digest}.so"
    if not built.exists():
        cache.mkdir(parents=True, exist_ok=True)
        partial = built.with_suffix(".partial")
        subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-o", str(partial), str(SHIM_SOURCE), "-ldl"], check=True)
        partial.rename(built)
    return built


def skewed_clock(seconds: int, cache: Path) -> dict[str, str]:
    """The environment that sets a process's wall clock ``seconds`` off."""
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketimeMT.so.1"))
    if not found:
        raise AssertionError("libfaketime is missing: apt-get install faketime (.ci/run installs it)")
    return {"LD_PRELOAD": f"{_shim(cache)} {found[0]}", "FAKETIME": f"{seconds:+d}s",
            "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
