"""Small inline SVG charts for the dashboard: a pool's 35-day trend and the license timeline.
Each is an image with a title and a description in words (the page also has the numbers as
tables); colours are never the only signal."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from html import escape

from entitle.api.common import parse_time

TREND_DAYS = 35


def trend_svg(pool: str, days: list[dict], cap: int | None, today: date, ident: str) -> str:
    """Daily peaks of ``pool`` over the last 35 days (a day without a figure is a gap)."""
    by_day = {e.get("day"): e.get(pool) for e in days if isinstance(e, dict)}
    series = [((today - timedelta(days=TREND_DAYS - 1 - i)).isoformat(), None) for i in range(TREND_DAYS)]
    series = [(d, by_day.get(d)) for d, _ in series]
    values = [v for _, v in series if isinstance(v, int)]
    top = max(values + ([cap] if cap else []) + [1])
    w, h, bar = 280, 56, 8
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-labelledby="{ident}-t {ident}-d" '
           f'viewBox="0 0 {w} {h}" width="{w}" height="{h}" class="trend">']
    if values:
        peak = max(values)
        peak_day = next(d for d, v in series if v == peak)
        desc = (f"{len(values)} of the last {TREND_DAYS} days recorded; highest {peak} on {peak_day}; "
                f"latest {values[-1]}" + (f"; max {cap}" if cap is not None else ""))
    else:
        desc = f"no daily figures in the last {TREND_DAYS} days"
    out.append(f'<title id="{ident}-t">{escape(pool)}: daily peak, last {TREND_DAYS} days</title>'
               f'<desc id="{ident}-d">{escape(desc)}</desc>')
    for i, (day, value) in enumerate(series):
        if not isinstance(value, int):
            continue
        bh = max(1.0, (h - 8) * value / top)
        over = cap is not None and value > cap
        out.append(f'<rect x="{i * bar}" y="{h - bh:.1f}" width="{bar - 2}" height="{bh:.1f}" '
                   f'class="{"bar over" if over else "bar"}"><title>{day}: {value}</title></rect>')
    if cap:
        y = h - (h - 8) * cap / top
        out.append(f'<line x1="0" x2="{TREND_DAYS * bar}" y1="{y:.1f}" y2="{y:.1f}" class="cap" '
                   f'stroke-dasharray="4 3"/>')
    out.append("</svg>")
    return "".join(out)


def _t(value: object) -> datetime | None:
    try:
        return parse_time(value) if value else None
    except (TypeError, ValueError):
        return None


def timeline_svg(licenses: list[dict], renewal: str | None, now: datetime, ident: str) -> str:
    """One bar per license from now to its notAfter, then its grace (hatched) to graceEnds."""
    ends = [t for lic in licenses for t in (_t(lic.get("notAfter")), _t(lic.get("graceEnds"))) if t and t > now]
    horizon = max(ends + [now + timedelta(days=90)])
    horizon = horizon + (horizon - now) * 0.05
    span = (horizon - now).total_seconds()
    w, label_w, row = 640, 170, 28
    h = 30 + row * max(1, len(licenses))

    def x(t: datetime) -> float:
        return label_w + (w - label_w - 10) * max(0.0, min(1.0, (t - now).total_seconds() / span))

    words = []
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-labelledby="{ident}-t {ident}-d" '
           f'viewBox="0 0 {w} {h}" width="{w}" height="{h}" class="timeline">']
    body = []
    for i, lic in enumerate(licenses):
        y = 24 + i * row
        name = str(lic.get("name", ""))
        end, grace = _t(lic.get("notAfter")), _t(lic.get("graceEnds"))
        phase = str(lic.get("phase", ""))
        body.append(f'<text x="0" y="{y + 14}" class="label">{escape(name[:24])}</text>')
        if end is None:
            body.append(f'<rect x="{label_w}" y="{y}" width="{w - label_w - 10}" height="18" class="lic {phase}"/>')
            words.append(f"{name}: {phase}, no end date")
            continue
        if end > now:
            body.append(f'<rect x="{label_w}" y="{y}" width="{x(end) - label_w:.1f}" height="18" '
                        f'class="lic {phase}"><title>{escape(name)} until {end.date()}</title></rect>')
        if grace and grace > max(end, now):
            gx = x(max(end, now))
            body.append(f'<rect x="{gx:.1f}" y="{y}" width="{x(grace) - gx:.1f}" height="18" class="grace">'
                        f'<title>{escape(name)} grace until {grace.date()}</title></rect>')
        words.append(f"{name}: {phase}, ends {end.date()}" + (f", grace until {grace.date()}" if grace else ""))
    out.append(f'<title id="{ident}-t">License timeline from today</title>'
               f'<desc id="{ident}-d">{escape("; ".join(words) or "no licenses")}'
               f'{escape(f"; next renewal {renewal[:10]}" if renewal else "")}</desc>')
    out.append(f'<text x="{label_w}" y="12" class="axis">today {now.date()}</text>'
               f'<text x="{w - 10}" y="12" class="axis end">{horizon.date()}</text>')
    out.extend(body)
    r = _t(renewal)
    if r and r > now:
        out.append(f'<line x1="{x(r):.1f}" x2="{x(r):.1f}" y1="16" y2="{h}" class="renewal"/>')
    out.append("</svg>")
    return "".join(out)
