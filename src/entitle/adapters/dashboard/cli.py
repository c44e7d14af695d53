"""``entitle dashboard [--kubeconfig K] [--port P] [--namespace N]... [--ledger L]``: a local,
read-only web page of entitlements, usage trends, renewals, denials and the feature graph, built
from what the user's own credentials may read (DESIGN "Dashboard and feature graph")."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from datetime import datetime, timedelta, timezone
from typing import Any

from entitle.adapters.dashboard.model import Dashboard

log = logging.getLogger("entitle.dashboard")
LEDGER_REFRESH = 300.0


def _now() -> datetime:
    return datetime.now(timezone.utc)


def ledger_days(ledger: str, now: datetime) -> dict[str, list[dict]]:
    """Every tenant's daily peaks over the last 35 days, from the usage ledger(s)."""
    from entitle.adapters.metering.export import events_from_ledger
    from entitle.domain.hourly import HourlyMetering

    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    start = int((today - timedelta(days=34)).timestamp())
    end = int((now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)).timestamp())
    metering = HourlyMetering(start, end)
    for event in sorted(events_from_ledger(ledger, None), key=lambda e: e.sort_key()):
        metering.feed(event)
    out: dict[str, list[dict]] = {}
    for tenant, hours in metering.finish().items():
        days: dict[str, dict] = {}
        for hour, q in hours.items():
            day = datetime.fromtimestamp(hour, timezone.utc).date().isoformat()
            entry = days.setdefault(day, {"day": day})
            for pool, meter in (("instances", "peak_instances"), ("seats", "peak_seats"), ("sessions", "peak_sessions")):
                if meter in q:
                    entry[pool] = max(entry.get(pool, 0), int(q[meter]))
        out[tenant] = [days[d] for d in sorted(days)]
    return out


async def serve(args: argparse.Namespace, ready: Any = None) -> None:
    from aiohttp import web
    from kubernetes import client, config

    from entitle.adapters.dashboard.server import dashboard_app
    from entitle.adapters.dashboard.source import ClusterReader
    from entitle.adapters.kube.async_api import AsyncApi

    cfg = client.Configuration()
    config.load_kube_config(config_file=args.kubeconfig, client_configuration=cfg)
    namespaces = list(args.namespace or [])
    if not namespaces:
        _, context = config.list_kube_config_contexts(config_file=args.kubeconfig)
        if (context or {}).get("context", {}).get("namespace"):
            namespaces = [context["context"]["namespace"]]
    dash = Dashboard()
    api = AsyncApi(cfg)
    reader = ClusterReader(api, dash, namespaces, _now)
    print(f"entitle dashboard: reading {cfg.host} …", file=sys.stderr, flush=True)
    await reader.start()
    refresher = None
    if args.ledger:
        print(f"entitle dashboard: reading the ledger {args.ledger} …", file=sys.stderr, flush=True)
        dash.ledger_days = await asyncio.to_thread(ledger_days, args.ledger, _now())
        dash.changed()

        async def refresh() -> None:
            while True:
                await asyncio.sleep(LEDGER_REFRESH)
                try:
                    dash.ledger_days = await asyncio.to_thread(ledger_days, args.ledger, _now())
                    dash.changed()
                except Exception as exc:  # noqa: BLE001 -- keep serving what was read
                    log.warning("reading the ledger failed: %s", exc)
        refresher = asyncio.get_running_loop().create_task(refresh())
    runner = web.AppRunner(dashboard_app(dash, _now), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, args.listen, args.port)
    await site.start()
    port = runner.addresses[0][1] if runner.addresses else args.port
    print(f"entitle dashboard: http://{args.listen}:{port}/ ({reader.scope}; read-only; Ctrl-C stops it)",
          flush=True)
    if ready is not None:
        ready(port)
    try:
        await asyncio.Event().wait()
    finally:
        if refresher is not None:
            refresher.cancel()
        await reader.stop()
        await runner.cleanup()
        await api.close()


def main(args: argparse.Namespace) -> int:
    from entitle.adapters.dashboard.source import NothingReadable

    try:
        asyncio.run(serve(args))
    except NothingReadable as exc:
        print(f"entitle dashboard: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"entitle dashboard: cannot listen on {args.listen}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except TimeoutError:
        print("entitle dashboard: the cluster did not answer the first listings within 30 s", file=sys.stderr)
        return 2
    return 0


def add_parser(sub: Any) -> None:
    p = sub.add_parser("dashboard", help="a local, read-only web page: entitlements, usage trend, renewals, denials, "
                                         "feature graph (your own credentials)")
    p.add_argument("--kubeconfig", help="kubeconfig (default: $KUBECONFIG or ~/.kube/config)")
    p.add_argument("--port", type=int, default=8050, help="port to serve on (default 8050; 0 = any free port)")
    p.add_argument("--listen", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("-n", "--namespace", action="append",
                   help="a namespace to read when the credentials cannot list cluster-wide (repeatable; default: "
                        "the kubeconfig context's)")
    p.add_argument("--ledger", help="a usage ledger (SQLite path or postgresql:// DSN): every tenant's history")
    p.set_defaults(func=main)
