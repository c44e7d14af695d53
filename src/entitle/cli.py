"""The ``entitle`` command line."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def _repo_root() -> Path:
    """Where ``crds/`` lives: the current directory when it is an entitle checkout."""
    cwd = Path.cwd()
    for candidate in (cwd, *cwd.parents):
        if (candidate / "pyproject.toml").exists() and (candidate / "src" / "entitle").exists():
            return candidate
    return cwd


def cmd_crds(args: argparse.Namespace) -> int:
    from entitle.adapters import crdgen

    root = Path(args.root) if args.root else _repo_root()
    if args.check:
        problems = crdgen.drift(root)
        for problem in problems:
            print(f"entitle crds --check: {problem}", file=sys.stderr)
        if problems:
            print("run `entitle crds` to regenerate them from the models", file=sys.stderr)
            return 1
        print("CRDs are up to date with the models")
        return 0
    for path in crdgen.write(root):
        print(f"wrote {path.relative_to(root) if path.is_relative_to(root) else path}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from entitle.adapters import check
    from entitle.adapters.config import load_instance_table

    try:
        table = load_instance_table(args.normalization)
    except ValueError as exc:
        print(f"entitle check: {exc}", file=sys.stderr)
        return check.EXIT_BAD_INPUT
    return check.main(args.file or [], args.now, args.output, sys.stdout, sys.stderr, sys.stdin, table)


def cmd_run(args: argparse.Namespace) -> int:
    from entitle.operator.main import run

    return run(args)


def cmd_dev(args: argparse.Namespace) -> int:
    from entitle.devenv import cli as devcli

    return devcli.main(args)


def cmd_usage_export(args: argparse.Namespace) -> int:
    from entitle.adapters.metering.export_cli import main as export_main

    return export_main(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="entitle", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("crds", help="generate the CRD YAML from the API models")
    p.add_argument("--check", action="store_true", help="exit 1 if the generated files drifted")
    p.add_argument("--root", help="repository root (default: the checkout around the current directory)")
    p.set_defaults(func=cmd_crds)

    p = sub.add_parser("check", help="decide admission offline over Namespace/License/Workload YAML")
    p.add_argument("-f", "--file", action="append", help="YAML file ('-' for stdin); repeatable")
    p.add_argument("--now", help="RFC 3339 time to decide at (default: now)")
    p.add_argument("-o", "--output", choices=["json", "table"], default="table")
    p.add_argument("--normalization", help="YAML/JSON file mapping instanceKind to units")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("run", help="run the operator (controllers and admission webhook)")
    p.add_argument("--config", help="operator configuration file (YAML)")
    p.add_argument("--namespace", help="namespace the operator runs in (peering, events)")
    p.add_argument("--standalone", action="store_true", help="no peering: run controllers unconditionally")
    p.add_argument("--webhook-worker", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("dev", help="a local control plane (etcd + kube-apiserver) for development")
    dsub = p.add_subparsers(dest="dev_command", required=True)
    up = dsub.add_parser("up", help="start it and print the kubeconfig path")
    up.add_argument("--dir", help="state directory (default: ./.entitle/dev, or ./.entitle/node)")
    up.add_argument("--node", action="store_true",
                    help="a real single-node cluster (kubelet, containerd, kube-proxy) in its own network namespace")
    up.add_argument("--image", metavar="CHECKOUT",
                    help="with --node: build the operator image from CHECKOUT's Dockerfile and import it")
    down = dsub.add_parser("down", help="stop it")
    down.add_argument("--dir", help="state directory (default: ./.entitle/dev, or ./.entitle/node)")
    down.add_argument("--node", action="store_true", help="the real node started by `up --node`")
    client = dsub.add_parser("webhook-client", help="write a webhook client CA, certificate and AdmissionConfiguration "
                                                    "for a cluster's apiserver (kind, kubeadm): only it may then review")
    client.add_argument("--out", required=True, help="directory to write into (created)")
    client.add_argument("--apiserver-dir", default="/etc/kubernetes/entitle",
                        help="where the apiserver will find these files (default: /etc/kubernetes/entitle)")
    p.set_defaults(func=cmd_dev)

    from entitle.adapters.licensing.cli import add_parser as add_license_parser

    add_license_parser(sub)
    from entitle.adapters.licensing.plan import add_parser as add_plan_parser

    add_plan_parser(sub)

    from entitle.adapters.dashboard.features_cli import add_parser as add_features_parser

    add_features_parser(sub)
    from entitle.adapters.dashboard.cli import add_parser as add_dashboard_parser
    from entitle.adapters.licensing.fleet_status import add_parser as add_fleet_parser

    add_fleet_parser(sub)

    add_dashboard_parser(sub)

    p = sub.add_parser("usage", help="usage records")
    usub = p.add_subparsers(dest="usage_command", required=True)
    ex = usub.add_parser("export", help="per-tenant usage totals for [from, to)")
    src = ex.add_mutually_exclusive_group(required=True)
    src.add_argument("--ledger", action="append",
                     help="an operator replica's ledger (SQLite file, or a postgresql:// DSN); repeat to merge "
                          "several replicas' ledgers (records with the same source and id count once)")
    src.add_argument("--events", help="CloudEvents JSON-lines file ('-' for stdin)")
    ex.add_argument("--from", dest="start", required=True, help="RFC 3339 start (inclusive)")
    ex.add_argument("--to", dest="end", required=True, help="RFC 3339 end (exclusive)")
    ex.add_argument("--tenant", help="only this tenant")
    ex.add_argument("--format", choices=["csv", "json"], default="json")
    ex.add_argument("--no-progress", action="store_true", help="no progress bar even on a terminal")
    ex.set_defaults(func=cmd_usage_export)
    from entitle.adapters.metering.push.cli import add_parsers as add_push_parsers

    add_push_parsers(usub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Exit codes: 0 success, 1 a decision or check said no, 2 bad input. Never a traceback:
    anything unexpected is reported in one line (exit 2) with ENTITLE_DEBUG=1 for the trace."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("entitle: interrupted", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0          # the reader went away (e.g. | head): nothing left to say
    except Exception as exc:  # noqa: BLE001 -- the contract: a message, not a traceback
        if os.environ.get("ENTITLE_DEBUG"):
            raise
        print(f"entitle {args.command}: unexpected error: {type(exc).__name__}: {str(exc)[:500]} "
              "(set ENTITLE_DEBUG=1 for details)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
