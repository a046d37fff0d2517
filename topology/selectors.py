"""Label selectors and node selector terms: matching and parsing, in one place.

Two kinds with the API's own semantics:
- a node selector term (node affinity, PV node affinity, StorageClass allowedTopologies):
  requirements ANDed, operators In/NotIn/Exists/DoesNotExist/Gt/Lt, `matchFields` on
  metadata.name; an empty term matches nothing;
- a label selector (pod affinity terms, spread constraints, namespace selectors):
  matchLabels and matchExpressions ANDed, operators In/NotIn/Exists/DoesNotExist; the
  empty selector `{}` matches everything, an absent one (None) nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from topology.errors import RecordError

NODE_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt")
LABEL_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


@dataclass(frozen=True, slots=True)
class Requirement:
    """One selector requirement, or a matchFields entry on metadata.name (`on_field`)."""

    key: str
    operator: str
    values: tuple[str, ...] = ()
    on_field: bool = False

    def matches(self, labels: Mapping[str, str], node_name: str = "") -> bool:
        if self.on_field:
            present, value = True, node_name
        else:
            present, value = self.key in labels, labels.get(self.key, "")
        op = self.operator
        if op == "In":
            return present and value in self.values
        if op == "NotIn":
            return not present or value not in self.values
        if op == "Exists":
            return present
        if op == "DoesNotExist":
            return not present
        if op in ("Gt", "Lt"):
            try:
                have, bound = int(value), int(self.values[0])
            except (ValueError, IndexError):
                return False
            return present and (have > bound if op == "Gt" else have < bound)
        return False


@dataclass(frozen=True, slots=True)
class SelectorTerm:
    """A nodeSelectorTerm: all requirements must hold (AND). An empty term matches nothing."""

    requirements: tuple[Requirement, ...]

    def matches(self, labels: Mapping[str, str], node_name: str) -> bool:
        return bool(self.requirements) and all(
            req.matches(labels, node_name) for req in self.requirements
        )


def any_term(terms: tuple[SelectorTerm, ...], labels: Mapping[str, str], node: str) -> bool:
    """A node selector: the terms are ORed."""
    return any(term.matches(labels, node) for term in terms)


@dataclass(frozen=True, slots=True)
class LabelSelector:
    requirements: tuple[Requirement, ...] = ()
    """matchLabels (as In with one value) and matchExpressions, all ANDed."""

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(req.matches(labels) for req in self.requirements)

    def keys(self) -> frozenset[str]:
        return frozenset(req.key for req in self.requirements)

    def narrowed(self, extra: tuple[Requirement, ...]) -> LabelSelector:
        return LabelSelector(self.requirements + tuple(r for r in extra
                                                        if r not in self.requirements))


def parse_requirements(obj: str, where: str, items: Any, operators: tuple[str, ...],
                       on_field: bool = False) -> tuple[Requirement, ...]:
    out = []
    for index, expr in enumerate(items or ()):
        if not isinstance(expr, dict) or expr.get("operator") not in operators:
            raise RecordError(obj, f"{where}[{index}]",
                              f"a requirement with operator {'/'.join(operators)}", expr)
        values = expr.get("values") or ()
        if not isinstance(values, list | tuple):
            raise RecordError(obj, f"{where}[{index}].values", "a list of strings", values)
        out.append(Requirement(str(expr.get("key", "")), expr["operator"],
                               tuple(str(v) for v in values), on_field))
    return tuple(out)


def parse_node_terms(obj: str, where: str, terms: Any) -> tuple[SelectorTerm, ...]:
    """nodeSelectorTerms (a NodeSelector)."""
    out = []
    for index, term in enumerate(terms or ()):
        at = f"{where}[{index}]"
        if not isinstance(term, dict):
            raise RecordError(obj, at, "a nodeSelectorTerm", term)
        reqs = parse_requirements(obj, f"{at}.matchExpressions", term.get("matchExpressions"),
                                  NODE_OPERATORS)
        reqs += parse_requirements(obj, f"{at}.matchFields", term.get("matchFields"),
                                   NODE_OPERATORS, on_field=True)
        out.append(SelectorTerm(reqs))
    return tuple(out)


def parse_label_selector(obj: str, where: str, raw: Any) -> LabelSelector | None:
    """None for an absent selector (matches nothing); `{}` matches everything."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise RecordError(obj, where, "a label selector", raw)
    labels = raw.get("matchLabels") or {}
    if not isinstance(labels, dict):
        raise RecordError(obj, f"{where}.matchLabels", "a map of strings", labels)
    reqs = tuple(Requirement(str(k), "In", (str(v),)) for k, v in sorted(labels.items()))
    reqs += parse_requirements(obj, f"{where}.matchExpressions", raw.get("matchExpressions"),
                               LABEL_OPERATORS)
    return LabelSelector(reqs)
