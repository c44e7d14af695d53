"""Before and after, in the same run: a benchmark of this tree against the same benchmark of
another commit (a git worktree), alternated so both see the same machine.

    python bench/compare.py --before 75db8c5 [--rounds 1] -- scale.py --workloads 5000 --tenants 50
    python bench/compare.py --before 75db8c5 -- admission.py --creates 150 --reviews 1000

Each round runs the "before" tree, then this one (each benchmark starts its own control plane
and operator from its own tree's sources); the output of every run is printed under its label,
and the lines starting with SUMMARY side by side at the end. A refactor that should change no
behaviour shows ratios near 1 between the two; absolute times vary from run to run.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _worktree(ref: str) -> Path:
    where = Path(tempfile.mkdtemp(prefix="entitle-before-")) / "tree"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(where), ref], check=True,
                   capture_output=True)
    return where


def _run(tree: Path, script: str, args: list[str]) -> str:
    # The benchmark puts its own tree's src/ first on sys.path; the operator it starts runs
    # `python -m entitle.cli`, which must import that same tree: PYTHONPATH says so.
    env = {"PYTHONPATH": str(tree / "src"), "PATH": "/usr/bin:/bin"}
    import os

    env = {**os.environ, **env}
    done = subprocess.run([sys.executable, str(tree / "bench" / script), *args], cwd=tree, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise SystemExit(f"{script} in {tree} failed ({done.returncode}):\n{done.stdout[-4000:]}")
    return done.stdout


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--before", required=True, help="the commit to compare against")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("bench", nargs=argparse.REMAINDER, help="-- SCRIPT [ARGS...]")
    args = parser.parse_args()
    bench = [a for a in args.bench if a != "--"]
    if not bench:
        parser.error("name the benchmark after --, e.g. -- scale.py --workloads 5000")
    script, rest = bench[0], bench[1:]
    before = _worktree(args.before)
    summaries: list[tuple[str, str]] = []
    try:
        for round_ in range(1, args.rounds + 1):
            for label, tree in ((f"before ({args.before})", before), ("after (this tree)", ROOT)):
                print(f"\n===== round {round_}: {label}: {script} {' '.join(rest)}", flush=True)
                out = _run(tree, script, rest)
                print(out, flush=True)
                summaries += [(label, line) for line in out.splitlines() if line.startswith("SUMMARY")]
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(before)], capture_output=True)
    print("\n===== summaries")
    for label, line in summaries:
        print(f"{label:<24} {line}")


if __name__ == "__main__":
    main()
