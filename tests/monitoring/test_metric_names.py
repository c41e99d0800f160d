"""The dashboard and the alert rules query only metrics the code exports.

The exported names come from the code itself, in-process: the operator's registry
(``vestige_operator.metrics.Metrics``) and the bridge's (``vestige_bridge.metrics.Metrics``),
each family expanded into the series names Prometheus stores (``_total``, ``_bucket``, ...). The
names in the queries come from a small PromQL tokenizer (``pack.metric_names``), itself tested
below. A renamed metric, or a query typo, fails here rather than as an empty panel or an alert
that can never fire.
"""

from __future__ import annotations

import kubernetes.client
import pytest
from prometheus_client import CollectorRegistry
from vestige_bridge.metrics import Metrics as BridgeMetrics
from vestige_operator.cluster import Cluster
from vestige_operator.config import OperatorConfig
from vestige_operator.metrics import Metrics as OperatorMetrics
from vestige_operator.reconcile import Reconciler

from tests.monitoring import pack

#: The series names Prometheus stores for each family type (prometheus_client's exposition).
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
    "unknown": ("",),
}


def series_names(registry: CollectorRegistry) -> set[str]:
    return {f"{family.name}{suffix}" for family in registry.collect() for suffix in SUFFIXES[family.type]}


@pytest.fixture(scope="module")
def exported() -> set[str]:
    cluster = Cluster(kubernetes.client.ApiClient(), max_workers=1)
    operator = OperatorMetrics(Reconciler(cluster, OperatorConfig(namespaces=("ns",))))
    names = series_names(operator.registry) | series_names(BridgeMetrics().registry)
    assert {"vestige_operator_reconciles_total", "vestige_bridge_auth_failures_total"} <= names
    return names


@pytest.fixture(scope="module")
def docs() -> list[dict]:
    return pack.render_pack()


def unknown(queries: list[str], exported: set[str]) -> dict[str, set[str]]:
    out = {}
    for query in queries:
        missing = pack.metric_names(query) - exported - pack.PROMETHEUS_SERIES
        if missing:
            out[query] = missing
    return out


def test_the_dashboard_queries_only_exported_metrics(docs: list[dict], exported: set[str]) -> None:
    queries = pack.dashboard_queries(pack.dashboard(docs))
    assert len(queries) > 20
    assert unknown(queries, exported) == {}
    used = set().union(*(pack.metric_names(q) for q in queries))
    # Both sides are on the dashboard: the operator's and the bridges'.
    assert any(n.startswith("vestige_operator_") for n in used)
    assert any(n.startswith("vestige_bridge_") for n in used)


def test_the_alert_rules_query_only_exported_metrics(docs: list[dict], exported: set[str]) -> None:
    queries = pack.rule_queries(pack.rule_groups(docs))
    assert queries
    assert unknown(queries, exported) == {}


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('sum by (le) (rate(a_bucket{job=~"$job", x="by(y)"}[$__rate_interval]))', {"a_bucket"}),
        ("max by (namespace, name) (b{phase!~'Ready'}) == 1", {"b"}),
        ("time() - c > 3600 and on(name) group_left(pod) d offset 5m", {"c", "d"}),
        ('absent(up{job="j"} == 1) or vector(0) unless e:recorded', {"up", "e:recorded"}),
        ("histogram_quantile(0.99, sum(rate(f[5m])) without (pod)) > bool 1e3", {"f"}),
        ("count((g - time()) > 0) / ignoring(x) h", {"g", "h"}),
    ],
)
def test_the_tokenizer_finds_metric_names_only(expr: str, names: set[str]) -> None:
    assert pack.metric_names(expr) == names


def test_an_unknown_name_is_reported(exported: set[str]) -> None:
    query = "sum(rate(vestige_operator_reconcile_total[5m]))"  # `_total` misspelled away
    assert unknown([query], exported) == {query: {"vestige_operator_reconcile_total"}}
