"""Terminal rendering of the explain route for `phalanx explain`: reasons first, then the
domain tree the gang uses (pods placed, room the domain had, room left)."""

from __future__ import annotations

from typing import Any

from topology.presets import short_level


def render(explain: dict[str, Any]) -> str:
    lines = [f"{explain['namespace']}/{explain['name']}: {explain['state']} "
             f"({explain['verdict']})", f"  {explain['summary']}"]
    if explain.get("code"):
        lines.append(f"  code: {explain['code']}")
    if explain.get("excluded"):
        lines.append("Nodes excluded:")
        lines += [f"  {row['nodes']:>7,}  {row['reason']}" for row in explain["excluded"]]
    if explain.get("levels_demand"):
        lines.append(f"Demand {explain['demand']} pods of {explain['shape']}; "
                     f"the cluster fits {explain.get('cluster_fits')}:")
        for row in explain["levels_demand"]:
            lines.append(f"  {short_level(row['level']):<24} best domain fits "
                         f"{row['best_fits']:>6}  {row['best_domain']}")
    if explain.get("remedies"):
        lines.append("To fit:")
        lines += [f"  - {remedy}" for remedy in explain["remedies"]]
    if explain.get("levels"):
        lines.append("Domains used (pods placed / room before / room left):")
        lines += _tree(explain["levels"])
        lines.append("Why:")
        for level in explain["levels"]:
            lines.append(f"  {short_level(level['level'])}: {level['why']}")
        passed = [(level["level"], room) for level in explain["levels"]
                  for room in level["runners_up"]]
        if passed:
            lines.append("Passed over (room):")
            lines += [f"  {short_level(key):<24} {room['fits']:>6}  {room['domain']}"
                      for key, room in passed]
    if explain.get("warnings"):
        lines.append("Warnings:")
        lines += [f"  ! {warning}" for warning in explain["warnings"]]
    return "\n".join(lines)


def _tree(levels: list[dict[str, Any]], limit: int = 40) -> list[str]:
    """Chosen domains as an indented tree; a domain's children share its path prefix."""
    out: list[str] = []

    def walk(depth: int, prefix: str) -> None:
        if depth == len(levels):
            return
        rooms = [r for r in levels[depth]["chosen"]
                 if not prefix or r["domain"].startswith(prefix + "/")]
        for room in rooms:
            if len(out) >= limit:
                return
            label = room["domain"].rsplit("/", 1)[-1]
            out.append(f"  {'  ' * depth}{label:<{max(8, 30 - 2 * depth)}} {room['placed']:>6} "
                       f"/ {room['fits']:>6} / {room['leftover']:>6}")
            walk(depth + 1, room["domain"])

    walk(0, "")
    total = sum(len(level["chosen"]) for level in levels)
    if total > len(out):
        out.append(f"  ... {total - len(out)} more domains (use --json)")
    return out
