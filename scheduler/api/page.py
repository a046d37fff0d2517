"""The topology map page (`/ui`), rendered on the server from what the explain API
already knows: no front-end build, one small script.

Two steps, both pure: `map_view` turns a snapshot and the gang records the caller may see
into a `MapView` (boxes per domain, each gang's footprint, pending gangs' reasons and
remedies, all from `views.explanation`, the one place a verdict is worded), and
`render_page` / `render_content` turn that into HTML. The script only swaps in a fresh
`render_content` every few seconds and highlights the footprint of the gang clicked.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from html import escape

import numpy as np

from scheduler.api import views
from scheduler.state import GangRecord
from solver.result import Placement
from topology.presets import short_level
from topology.quantity import BASIC_RESOURCES, CPU, format_units
from topology.snapshot import TopologySnapshot, render_path

MAX_LEAVES = 5_000
"""Bottom domains drawn at most: 100,000 nodes in racks of 32 are ~3,100."""
REFRESH_S = 5


@dataclass(frozen=True)
class Box:
    """One domain: its name within its parent, node count and the headline resource."""

    path: str
    label: str
    nodes: int
    free: int
    total: int
    leaf: int
    """Index among the drawn bottom domains (-1 above the bottom level)."""
    children: tuple[Box, ...] = ()


@dataclass(frozen=True)
class GangRow:
    key: str
    """namespace/Kind/name: unique, what the footprint highlight is keyed by."""
    namespace: str
    name: str
    kind: str
    state: str
    size: int
    bound: int
    domains: str
    """Domains used per level, with the lower bound where it is lower, when placed."""
    leaves: tuple[int, ...]
    verdict: str
    summary: str
    remedies: tuple[str, ...]

    @property
    def pending(self) -> bool:
        return self.verdict in ("pending", "invalid", "waiting", "preempting")


@dataclass(frozen=True)
class MapView:
    resource: str
    """The resource boxes are coloured by: the first accelerator, else cpu."""
    levels: tuple[str, ...]
    boxes: tuple[Box, ...]
    leaves_total: int
    nodes: int
    free: int
    total: int
    gangs: tuple[GangRow, ...]
    namespaces: tuple[str, ...]
    """Every namespace the caller may see gangs of (the filter's choices)."""
    namespace: str
    """The filter: "" for all."""
    topology_hidden: str = ""
    """Why the map is not drawn (the caller may not read /v1/topology), if it is not."""


def headline_resource(snapshot: TopologySnapshot) -> str:
    extended = [r for r in snapshot.resources if r not in BASIC_RESOURCES]
    return extended[0] if extended else CPU


def _free_per_node(snapshot: TopologySnapshot, resource: str) -> np.ndarray:
    """Each node's free amount of `resource` (none where over-committed or not offered)."""
    if resource not in snapshot.resources:
        return np.zeros(len(snapshot.tree.nodes), dtype=np.int64)
    return np.maximum(snapshot.free[:, snapshot.resources.index(resource)], 0)


def _boxes(snapshot: TopologySnapshot, resource: str, free_nodes: np.ndarray
           ) -> tuple[tuple[Box, ...], int]:
    tree = snapshot.tree
    if not tree.levels or not len(tree.nodes):
        return (), 0
    total_nodes = tree.allocatable(resource)
    bottom = tree.depth - 1
    leaves_total = tree.domain_count(bottom)

    def build(level: int, domain: int) -> Box:
        path = tree.paths[level][domain]
        if level == bottom:
            children: tuple[Box, ...] = ()
            leaf = domain if domain < MAX_LEAVES else -1
        else:
            children = tuple(build(level + 1, child) for child in tree.children(level, domain)
                             if level + 1 < bottom or child < MAX_LEAVES)
            leaf = -1
        return Box(render_path(path), path[-1], int(counts[level][domain]),
                   int(free[level][domain]), int(totals[level][domain]), leaf, children)

    counts = [np.bincount(tree.domain_of[lv], minlength=tree.domain_count(lv))
              for lv in range(tree.depth)]
    free = [tree.per_domain(lv, free_nodes) for lv in range(tree.depth)]
    totals = [tree.per_domain(lv, total_nodes) for lv in range(tree.depth)]
    return tuple(build(0, d) for d in range(tree.domain_count(0))), leaves_total


def _leaves(record: GangRecord, snapshot: TopologySnapshot) -> tuple[int, ...]:
    result = record.result
    if not isinstance(result, Placement) or not record.phase.placed:
        return ()
    tree = snapshot.tree
    if not tree.levels:
        return ()
    bottom = tree.domain_of[-1]
    found = {int(bottom[tree.index[a.node]]) for a in result.assignments
             if a.node in tree.index}
    return tuple(sorted(d for d in found if d < MAX_LEAVES))


def _row(record: GangRecord, snapshot: TopologySnapshot) -> GangRow:
    key = record.key
    said = views.explanation(record)
    result = record.result
    domains = ""
    if isinstance(result, Placement) and record.phase.placed:
        m = result.metrics
        domains = " · ".join(
            f"{short_level(level)} {used}"
            + (f" (≥{bound})" if (bound := m.lower_bound.get(level)) is not None
               and bound < used else "")
            for level, used in m.domains_used.items())
    return GangRow(key=f"{key.namespace}/{key.kind}/{key.name}", namespace=key.namespace,
                   name=key.name, kind=key.kind, state=record.phase.value, size=record.size,
                   bound=record.bound_pods, domains=domains, leaves=_leaves(record, snapshot),
                   verdict=said.verdict, summary=said.summary,
                   remedies=tuple(said.remedies))


def map_view(snapshot: TopologySnapshot, records: Iterable[GangRecord], namespace: str = "",
             topology_hidden: str = "") -> MapView:
    """`records`: the gangs the caller may see (all namespaces); `namespace` filters the
    rows and footprints but not the filter's choices."""
    visible = sorted(records, key=lambda r: r.key)
    resource = headline_resource(snapshot)
    free_nodes = _free_per_node(snapshot, resource)
    boxes, leaves_total = ((), 0) if topology_hidden else _boxes(snapshot, resource,
                                                                 free_nodes)
    free = int(free_nodes.sum())
    total = int(snapshot.tree.allocatable(resource).sum())
    shown = [r for r in visible if not namespace or r.key.namespace == namespace]
    return MapView(resource=resource, levels=snapshot.levels, boxes=boxes,
                   leaves_total=leaves_total, nodes=len(snapshot.nodes),
                   free=free, total=total, gangs=tuple(_row(r, snapshot) for r in shown),
                   namespaces=tuple(sorted({r.key.namespace for r in visible})),
                   namespace=namespace, topology_hidden=topology_hidden)


def _colour(free: int, total: int) -> str:
    """Green when all free, through amber, to red when none is."""
    share = free / total if total else 0.0
    return f"hsl({round(120 * share)}, 62%, {round(42 + 14 * share)}%)"


def _amount(resource: str, value: int) -> str:
    return format_units(resource, max(0, value))


def _box(box: Box, resource: str, depth: int) -> str:
    title = escape(f"{box.path}: {box.nodes} nodes, {_amount(resource, box.free)} of "
                   f"{_amount(resource, box.total)} {resource} free", quote=True)
    if not box.children and box.leaf >= 0:
        return (f'<div class="leaf" data-leaf="{box.leaf}" title="{title}" '
                f'style="flex-grow:{max(1, box.nodes)};background:'
                f'{_colour(box.free, box.total)}"></div>')
    inner = "".join(_box(child, resource, depth + 1) for child in box.children)
    return (f'<div class="domain depth{depth}" data-path="{escape(box.path, quote=True)}" '
            f'title="{title}" style="flex-grow:{max(1, box.nodes)}">'
            f'<div class="label">{escape(box.label)} '
            f'<span class="free">{_amount(resource, box.free)}/'
            f'{_amount(resource, box.total)}</span></div>'
            f'<div class="children">{inner}</div></div>')


def _gang_row(row: GangRow) -> str:
    leaves = " ".join(str(leaf) for leaf in row.leaves)
    return (f'<tr class="gang {escape(row.verdict)}" data-gang="{escape(row.key, quote=True)}" '
            f'data-leaves="{leaves}"><td>{escape(row.namespace)}</td>'
            f'<td class="name">{escape(row.name)}</td><td>{escape(row.kind)}</td>'
            f'<td class="state">{escape(row.state)}</td><td>{row.bound}/{row.size}</td>'
            f'<td>{escape(row.domains)}</td></tr>')


def _pending(row: GangRow) -> str:
    remedies = "".join(f"<li>{escape(r)}</li>" for r in row.remedies)
    return (f'<div class="pending" data-gang="{escape(row.key, quote=True)}">'
            f'<h3>{escape(row.namespace)}/{escape(row.name)} '
            f'<small>{escape(row.kind)} · {escape(row.state)}</small></h3>'
            f'<p class="reason">{escape(row.summary)}</p>'
            + (f'<ul class="remedies">{remedies}</ul>' if remedies else "") + "</div>")


def _options(view: MapView) -> str:
    options = ['<option value="">all namespaces</option>']
    for ns in view.namespaces:
        chosen = " selected" if ns == view.namespace else ""
        options.append(f'<option value="{escape(ns, quote=True)}"{chosen}>{escape(ns)}</option>')
    return "".join(options)


def render_content(view: MapView) -> str:
    """The part the script refreshes: summary, map, gang table, pending reasons."""
    resource = view.resource
    parts = [f'<p class="summary">{view.nodes} nodes; {_amount(resource, view.free)} of '
             f'{_amount(resource, view.total)} {escape(resource)} free; '
             f'{len(view.gangs)} gang(s) shown</p>']
    if view.topology_hidden:
        parts.append(f'<p class="hidden-map">{escape(view.topology_hidden)}</p>')
    else:
        drawn = min(view.leaves_total, MAX_LEAVES)
        levels = " &gt; ".join(escape(level) for level in view.levels)
        parts.append(f'<h2>Topology <small>{levels}; colour: free {escape(resource)}'
                     f"</small></h2>"
                     f'<div id="map">{"".join(_box(b, resource, 0) for b in view.boxes)}</div>')
        if drawn < view.leaves_total:
            parts.append(f'<p class="truncated">{drawn} of {view.leaves_total} bottom '
                         f"domains drawn</p>")
    rows = "".join(_gang_row(row) for row in view.gangs)
    parts.append('<h2>Gangs <small>click one to see its footprint</small></h2>'
                 '<table id="gangs"><thead><tr><th>namespace</th><th>name</th><th>kind</th>'
                 "<th>state</th><th>bound</th><th>domains used (lower bound if lower)</th></tr>"
                 f"</thead><tbody>{rows}</tbody></table>")
    pending = [row for row in view.gangs if row.pending]
    parts.append(f'<h2>Pending <small>{len(pending)}</small></h2><div id="pending">'
                 + "".join(_pending(row) for row in pending) + "</div>")
    return "".join(parts)


STYLE = """
body{font:14px system-ui,sans-serif;margin:1.2em;color:#222}
h1{font-size:20px;margin:0 0 .4em}h2{font-size:16px;margin:1.2em 0 .4em}
small{color:#666;font-weight:normal}
#map{display:flex;flex-wrap:wrap;gap:4px}
.domain{display:flex;flex-direction:column;border:1px solid #999;border-radius:3px;
 padding:2px;min-width:36px;background:#fafafa}
.domain .label{font-size:11px;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.domain .children{display:flex;flex-wrap:wrap;gap:2px;flex:1}
.leaf{min-width:10px;height:22px;border-radius:2px;outline:1px solid #0002}
.leaf.hl{outline:3px solid #1565c0;outline-offset:-1px;box-shadow:0 0 0 2px #fff inset}
table{border-collapse:collapse}td,th{padding:3px 8px;border-bottom:1px solid #ddd;
 text-align:left}
tr.gang{cursor:pointer}tr.gang.selected{background:#e3f2fd}
tr.gang.pending td.state,tr.gang.invalid td.state{color:#b71c1c}
.pending{border-left:4px solid #b71c1c;padding:2px 10px;margin:6px 0;background:#fff8f8}
.pending h3{font-size:14px;margin:4px 0}
"""

SCRIPT = """
(function(){
  var selected = null, refreshes = 0;
  function highlight(){
    document.querySelectorAll('.leaf.hl').forEach(function(e){e.classList.remove('hl');});
    document.querySelectorAll('tr.gang').forEach(function(row){
      var on = row.dataset.gang === selected;
      row.classList.toggle('selected', on);
      if (on && row.dataset.leaves) row.dataset.leaves.split(' ').forEach(function(i){
        var leaf = document.querySelector('.leaf[data-leaf="' + i + '"]');
        if (leaf) leaf.classList.add('hl');
      });
    });
  }
  document.addEventListener('click', function(ev){
    var row = ev.target.closest && ev.target.closest('tr.gang');
    if (!row) return;
    selected = selected === row.dataset.gang ? null : row.dataset.gang;
    highlight();
  });
  var filter = document.getElementById('namespace');
  filter.addEventListener('change', function(){
    var url = new URL(location.href);
    if (filter.value) url.searchParams.set('namespace', filter.value);
    else url.searchParams.delete('namespace');
    location.href = url.toString();
  });
  function refresh(){
    var url = new URL(location.href);
    url.pathname = url.pathname.replace(/\\/?$/, '') + '/content';
    fetch(url.toString(), {credentials: 'same-origin'}).then(function(reply){
      if (!reply.ok) throw new Error(reply.status + ' ' + reply.statusText);
      return reply.text();
    }).then(function(html){
      document.getElementById('content').innerHTML = html;
      refreshes += 1;
      document.body.dataset.refreshes = String(refreshes);
      document.getElementById('status').textContent =
        'updated ' + new Date().toLocaleTimeString();
      highlight();
    }).catch(function(err){
      document.getElementById('status').textContent = 'refresh failed: ' + err.message;
    });
  }
  setInterval(refresh, REFRESH_MS);
})();
"""


def render_page(view: MapView) -> str:
    """The whole page; `render_content` is what its script fetches again."""
    script = SCRIPT.replace("REFRESH_MS", str(REFRESH_S * 1000))
    return ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<title>Phalanx: topology</title>"
            f"<style>{STYLE}</style></head><body data-refreshes=\"0\">"
            "<h1>Phalanx topology map</h1>"
            f'<label>namespace <select id="namespace">{_options(view)}</select></label> '
            f'<span id="status">refreshed every {REFRESH_S} s</span>'
            f'<main id="content">{render_content(view)}</main>'
            f"<script>{script}</script></body></html>")

