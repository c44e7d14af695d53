"""The dashboard's pages, rendered on the server (no framework, no CDN: it works air-gapped).
Everything from the cluster is escaped. Accessible by construction: landmarks and a skip link,
headings in order, tables with captions and header cells, every chart with a text alternative
and the numbers beside it, state said in words (never by colour alone)."""

from __future__ import annotations

from datetime import datetime
from html import escape
from urllib.parse import quote

from entitle.adapters.dashboard.charts import timeline_svg, trend_svg
from entitle.adapters.dashboard.graph_render import to_svg
from entitle.adapters.dashboard.model import POOLS, Dashboard
from entitle.domain.feature_graph import NOT_ENTITLED

POOL_NAMES = {"instances": "Instance units", "seats": "Named seats", "sessions": "Concurrent sessions"}
BAD_CONDITIONS = {"InGrace", "OverCap", "InBurst", "UsageHigh", "BurstBudgetUsedUp"}


def document(title: str, main: str, version: int) -> str:
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<title>{escape(title)} · entitle</title><link rel="stylesheet" href="/static/dashboard.css">'
            f'<script src="/static/dashboard.js" defer></script></head>'
            f'<body data-version="{version}"><a class="skip" href="#main">Skip to content</a>'
            f'<header><nav aria-label="Site"><a href="/" class="brand">entitle</a> <span>read-only dashboard'
            f'</span></nav></header><main id="main" tabindex="-1">{main}</main>'
            f'<footer><p id="live" role="status" aria-live="polite">Live: updates as the cluster changes.</p>'
            f'</footer></body></html>')


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = int(seconds)
    d, rest = divmod(seconds, 86400)
    h, rest = divmod(rest, 3600)
    m = rest // 60
    return " ".join(p for p in (f"{d}d" if d else "", f"{h}h" if h else "", f"{m}m" if m or not (d or h) else "") if p)


def _pool_text(pool: dict | None) -> str:
    if not pool:
        return "—"
    cap = pool.get("max")
    return f"{pool.get('used', 0)} of {cap}" if cap is not None else f"{pool.get('used', 0)} (unlimited)"


def _href(tenant: str) -> str:
    return "/t/" + quote(tenant, safe="")


def index(dash: Dashboard, now: datetime) -> str:
    rows = []
    for tenant in dash.tenants():
        status = dash.status_of(tenant) or {}
        denials = len(dash.denials_of(tenant, now))
        flags = [c["type"] for c in status.get("conditions") or [] if c.get("type") in BAD_CONDITIONS
                 and c.get("status") == "True"]
        state = ("active" if status.get("active") else "no active license") if status else "ledger only"
        rows.append(
            f'<tr><th scope="row"><a href="{_href(tenant)}">{escape(tenant)}</a></th><td>{escape(state)}'
            f'{"".join(f" <span class=badge>{escape(f)}</span>" for f in flags)}</td>'
            + "".join(f"<td>{escape(_pool_text(status.get(p)))}</td>" for p in POOLS)
            + f'<td>{escape((status.get("renewal") or "—")[:10])}</td><td>{denials}</td></tr>')
    if not rows:
        body = ('<p>No tenant is visible with these credentials: no TenantEntitlement in the namespaces you may '
                'read. A tenant team reads its own namespace (<code>--namespace</code>); a platform team with '
                'cluster-wide read, or <code>--ledger</code>, sees every tenant.</p>')
    else:
        body = ('<table><caption>Tenants you can see</caption><thead><tr><th scope="col">Tenant</th>'
                '<th scope="col">State</th><th scope="col">Instances</th><th scope="col">Seats</th>'
                '<th scope="col">Sessions</th><th scope="col">Next renewal</th>'
                '<th scope="col">Denials (24 h)</th></tr></thead><tbody>' + "".join(rows) + "</tbody></table>")
    return f"<h1>Entitlements</h1>{body}"


def _pool_section(tenant: str, pool: str, status: dict, days: list[dict], now: datetime) -> str:
    data = status.get(pool)
    if not isinstance(data, dict):
        return ""
    cap, used = data.get("max"), data.get("used", 0)
    ident = f"trend-{pool}"
    meter = (f'<meter min="0" max="{max(cap, 1)}" value="{min(used, max(cap, 1))}" '
             f'aria-label="{escape(POOL_NAMES[pool])}: {used} of {cap}"></meter>') if cap else ""
    burst = ""
    if data.get("burstLeftSeconds") is not None:
        burst = (f'<p>Burst: up to {data.get("burstExtra", 0)} above max; budget left this month '
                 f'<strong>{_duration(data.get("burstLeftSeconds"))}</strong> of {escape(str(data.get("burstWindow")))}'
                 f'</p>')
    table = "".join(f"<tr><th scope=\"row\">{escape(e['day'])}</th><td>{e.get(pool, '—')}</td></tr>"
                    for e in reversed(days) if isinstance(e, dict) and "day" in e)
    return (f'<section class="pool" aria-labelledby="h-{pool}"><h3 id="h-{pool}">{POOL_NAMES[pool]}</h3>'
            f'<p class="figure" data-pool="{pool}" data-used="{used}" data-max="{"" if cap is None else cap}">'
            f'<strong>{escape(_pool_text(data))}</strong></p>{meter}{burst}'
            f'{trend_svg(pool, days, cap, now.date(), ident)}'
            f'<p class="hint">Daily peak, last 35 days{" (dashed line: max)" if cap else ""}.</p>'
            f'<details><summary>Daily peaks (table)</summary><table><caption>{POOL_NAMES[pool]}: daily peak'
            f'</caption><thead><tr><th scope="col">Day (UTC)</th><th scope="col">Peak</th></tr></thead>'
            f'<tbody>{table}</tbody></table></details></section>')


def tenant_page(dash: Dashboard, tenant: str, now: datetime) -> str | None:
    if tenant not in dash.tenants():
        return None
    status = dash.status_of(tenant) or {}
    days = dash.days_of(tenant)
    parts = [f"<h1>Tenant {escape(tenant)}</h1>"]
    namespaces = dash.tenants()[tenant]
    if namespaces:
        parts.append(f'<p>Namespaces you can see: {", ".join(f"<code>{escape(n)}</code>" for n in namespaces)}. '
                     f'{"Active" if status.get("active") else "<strong>No active license</strong>"}'
                     f'{"; <strong>in grace</strong>" if status.get("inGrace") else ""}.</p>')
        notes = [c for c in status.get("conditions") or [] if c.get("status") == "True" and c.get("type")
                 in BAD_CONDITIONS]
        if notes:
            parts.append('<ul class="notices">' + "".join(
                f'<li><strong>{escape(c["type"])}</strong>: {escape(c.get("message") or "")}</li>' for c in notes)
                + "</ul>")
    else:
        parts.append("<p>From the usage ledger only (no TenantEntitlement visible).</p>")
    parts.append('<h2>Usage</h2><div class="pools">'
                 + "".join(_pool_section(tenant, p, status, days, now) for p in POOLS) + "</div>")
    if not any(isinstance(status.get(p), dict) for p in POOLS) and days:
        parts.append(_ledger_table(days))
    licenses = status.get("licenses") or []
    renewal = status.get("renewal")
    lic_rows = "".join(
        f'<tr><th scope="row">{escape(str(lic.get("name")))}</th><td>{escape(str(lic.get("edition") or "—"))}</td>'
        f'<td>{escape(str(lic.get("phase")))}</td><td>{escape(str(lic.get("revision") or "—"))}</td>'
        f'<td>{escape((lic.get("notAfter") or "no end")[:10])}</td><td>{escape((lic.get("graceEnds") or "—")[:10])}</td>'
        f'</tr>' for lic in licenses)
    parts.append('<h2>Licenses and renewals</h2>'
                 + (f'<p>Next renewal: <strong>{escape(renewal[:10])}</strong> '
                    f'({max(0, (datetime.fromisoformat(renewal.replace("Z", "+00:00")) - now).days)} days).</p>'
                    if renewal else "<p>No renewal date: the licenses in force do not end.</p>")
                 + (timeline_svg(licenses, renewal, now, "timeline") if licenses else "")
                 + '<table><caption>Licenses</caption><thead><tr><th scope="col">License</th><th scope="col">'
                   'Edition</th><th scope="col">Phase</th><th scope="col">Revision</th><th scope="col">Not after'
                   '</th><th scope="col">Grace ends</th></tr></thead><tbody>' + lic_rows + "</tbody></table>")
    denials = dash.denials_of(tenant, now)
    den_rows = "".join(
        f'<tr><td><time datetime="{d.time.isoformat()}">{d.time.strftime("%Y-%m-%d %H:%M:%S")}</time></td>'
        f'<th scope="row">{escape(d.reason)}</th><td>{escape(d.kind)} {escape(d.namespace)}/{escape(d.name)}</td>'
        f'<td>{escape(d.message)}</td></tr>' for d in denials[:100])
    parts.append('<h2>Denials in the last 24 hours</h2>' + (
        '<table class="denials"><caption>Denied requests, newest first</caption><thead><tr><th scope="col">Time '
        '(UTC)</th><th scope="col">Reason</th><th scope="col">Object</th><th scope="col">Message</th></tr></thead>'
        f'<tbody>{den_rows}</tbody></table>' if denials else "<p>None.</p>"))
    graph = dash.graph_of(tenant)
    feat_rows = "".join(
        f'<tr><th scope="row">{escape(n.name)}</th><td>{escape(n.caption)}</td>'
        f'<td>{escape(", ".join(b for a, b in graph.edges if a == n.name) or "—")}</td></tr>' for n in graph.nodes)
    missing = sum(1 for n in graph.nodes if n.state == NOT_ENTITLED)
    parts.append('<h2>Features</h2>'
                 + f'<p>{len(graph.nodes) - missing} entitled or on trial; {missing} not entitled. Arrows point from a '
                   f'feature to what it requires.</p>'
                 + f'<div class="graph">{to_svg(graph, f"Feature graph of {tenant}", "graph")}</div>'
                 + '<table><caption>Features, their state, use and requirements</caption><thead><tr>'
                   '<th scope="col">Feature</th><th scope="col">State and use</th><th scope="col">Requires</th></tr>'
                   f'</thead><tbody>{feat_rows}</tbody></table>')
    return "".join(parts)


def _ledger_table(days: list[dict]) -> str:
    rows = "".join(f'<tr><th scope="row">{escape(e["day"])}</th>' + "".join(f"<td>{e.get(p, '—')}</td>" for p in POOLS)
                   + "</tr>" for e in reversed(days))
    return ('<table><caption>Daily peaks from the usage ledger</caption><thead><tr><th scope="col">Day</th>'
            '<th scope="col">Instances</th><th scope="col">Seats</th><th scope="col">Sessions</th></tr></thead>'
            f'<tbody>{rows}</tbody></table>')
