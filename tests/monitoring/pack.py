"""The chart's monitoring pack as rendered by `helm template`, and the metric names in its queries."""

from __future__ import annotations

import json
import re
from typing import Any

from tests.unit.test_chart import PACK_ON, render_chart

#: Series Prometheus itself writes for every target (not exported by any code of ours).
PROMETHEUS_SERIES = frozenset({"up"})


def render_pack(*args: str) -> list[dict[str, Any]]:
    return render_chart(*PACK_ON, *args)


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [d for d in docs if d["kind"] == kind]
    return found


def rule_groups(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return list(one(docs, "PrometheusRule")["spec"]["groups"])


def dashboard(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """The dashboard's JSON: the ConfigMap with Grafana's sidecar label (the admission policy's
    params are a ConfigMap too)."""
    (cm,) = [
        d
        for d in docs
        if d["kind"] == "ConfigMap" and "grafana_dashboard" in (d["metadata"].get("labels") or {})
    ]
    (text,) = cm["data"].values()
    return dict(json.loads(text))


def rule_queries(groups: list[dict[str, Any]]) -> list[str]:
    return [str(rule["expr"]) for group in groups for rule in group["rules"]]


def dashboard_queries(dash: dict[str, Any]) -> list[str]:
    """Every PromQL expression of the dashboard: panel targets and query variables."""
    out: list[str] = []

    def panels(items: list[dict[str, Any]]) -> None:
        for panel in items:
            out.extend(t["expr"] for t in panel.get("targets", []) if t.get("expr"))
            panels(panel.get("panels", []))

    panels(dash.get("panels", []))
    for var in dash.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            out.append(_grafana_function(query))
    return out


def _grafana_function(query: str) -> str:
    """``label_values(<selector>, <label>)`` (Grafana's, not PromQL's) -> ``<selector>``."""
    m = re.fullmatch(r"\s*label_values\(\s*(.+?)\s*,\s*[A-Za-z_][A-Za-z0-9_]*\s*\)\s*", query)
    return m.group(1) if m else query


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_VARIABLE = re.compile(r"\$\{?\w+\}?")
_IDENT = re.compile(r"(?<![\w.:])[A-Za-z_:][A-Za-z0-9_:]*(?![\w:])(?!\s*\()")
_KEYWORDS = frozenset(
    {
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "atan2",
        "inf",
        "nan",
        "Inf",
        "NaN",
    }
)


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers that are not functions (followed
    by ``(``), keywords, label names (inside ``{}`` or a grouping list), strings, ranges, durations
    or Grafana variables."""
    text = _VARIABLE.sub("1", expr)
    text = _STRING.sub(" ", text)
    text = _MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    return {m.group(0) for m in _IDENT.finditer(text)} - _KEYWORDS
