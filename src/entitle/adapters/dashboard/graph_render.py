"""The feature graph drawn: Graphviz DOT text, and a self-contained SVG laid out here (required
features on the left, what requires them to the right) so no Graphviz is needed to see it.

The SVG is accessible on its own: ``role="img"`` with a title and a description listing every
dependency in words; each node says its state in text (colour is never the only signal) and has
a ``<title>`` tooltip."""

from __future__ import annotations

from html import escape

from entitle.domain.feature_graph import ENTITLED, NOT_ENTITLED, TRIAL, TRIAL_OVER, Graph, layers

# (fill, stroke, dash): text is #111 on every fill (contrast > 12:1).
STYLE = {ENTITLED: ("#e3f4e8", "#1e6b34", ""), TRIAL: ("#fff1d6", "#8a5300", ""),
         TRIAL_OVER: ("#f0f0f0", "#5c5c5c", "6 3"), NOT_ENTITLED: ("#ffffff", "#5c5c5c", "3 3")}
NODE_W, NODE_H, COL_W, ROW_H, PAD = 210, 50, 270, 66, 16


def _dot_id(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_dot(graph: Graph, title: str = "features") -> str:
    lines = [f"digraph {_dot_id(title)} {{", "  rankdir=RL;", '  node [shape=box, style="rounded,filled", '
             'fontname="sans-serif"];']
    for n in graph.nodes:
        fill, stroke, dash = STYLE[n.state]
        style = '"rounded,filled,dashed"' if dash else '"rounded,filled"'
        label = _dot_id(n.name)[:-1] + "\\n" + _dot_id(n.caption)[1:]     # a DOT line break between
        lines.append(f"  {_dot_id(n.name)} [label={label}, fillcolor=\"{fill}\", "
                     f"color=\"{stroke}\", style={style}];")
    for a, b in graph.edges:
        lines.append(f"  {_dot_id(a)} -> {_dot_id(b)} [label=\"requires\"];")
    if graph.omitted:
        lines.append(f"  // {graph.omitted} more features omitted")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _clip(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[:chars - 1] + "…"


def to_svg(graph: Graph, title: str = "Feature graph", ident: str = "fg") -> str:
    depth = layers(graph)
    columns: dict[int, list[str]] = {}
    for n in graph.nodes:
        columns.setdefault(depth[n.name], []).append(n.name)
    pos: dict[str, tuple[int, int]] = {}
    for col, names in columns.items():
        for row, name in enumerate(sorted(names)):
            pos[name] = (PAD + col * COL_W, PAD + row * ROW_H)
    width = PAD * 2 + (max(columns, default=0)) * COL_W + NODE_W
    height = PAD * 2 + max((len(v) for v in columns.values()), default=1) * ROW_H
    words = [f"{a} requires {b}" for a, b in graph.edges] or ["no feature requires another"]
    desc = "; ".join(words) + "."
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-labelledby="{ident}-t {ident}-d" '
           f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" class="feature-graph">',
           f'<title id="{ident}-t">{escape(title)}</title><desc id="{ident}-d">{escape(desc)}</desc>',
           '<defs><marker id="%s-arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" markerHeight="8" '
           'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#333"/></marker></defs>' % ident]
    for a, b in graph.edges:
        (ax, ay), (bx, by) = pos[a], pos[b]
        x1, y1 = ax, ay + NODE_H / 2
        x2, y2 = bx + NODE_W, by + NODE_H / 2
        if depth[a] <= depth[b]:   # (a cut cycle) go round below
            x1, x2 = ax + NODE_W / 2, bx + NODE_W / 2
            y1, y2 = ay + NODE_H, by + NODE_H
        out.append(f'<path d="M{x1},{y1} C{(x1 + x2) / 2},{y1} {(x1 + x2) / 2},{y2} {x2},{y2}" fill="none" '
                   f'stroke="#333" stroke-width="1.5" marker-end="url(#{ident}-arrow)" '
                   f'data-edge="{escape(a)}→{escape(b)}"/>')
    for n in graph.nodes:
        x, y = pos[n.name]
        fill, stroke, dash = STYLE[n.state]
        dashed = f' stroke-dasharray="{dash}"' if dash else ""
        out.append(f'<g class="node {n.state}" data-feature="{escape(n.name)}" data-state="{n.state}">'
                   f'<title>{escape(n.name)}: {escape(n.caption)}</title>'
                   f'<rect x="{x}" y="{y}" width="{NODE_W}" height="{NODE_H}" rx="8" fill="{fill}" '
                   f'stroke="{stroke}" stroke-width="1.5"{dashed}/>'
                   f'<text x="{x + 10}" y="{y + 20}" font-weight="600" font-size="14" fill="#111">'
                   f'{escape(_clip(n.name, 26))}</text>'
                   f'<text x="{x + 10}" y="{y + 38}" font-size="12" fill="#111">{escape(_clip(n.caption, 32))}</text>'
                   f'</g>')
    if graph.omitted:
        out.append(f'<text x="{PAD}" y="{height - 4}" font-size="12" fill="#111">{graph.omitted} more features '
                   f'not drawn</text>')
    out.append("</svg>")
    return "".join(out)
