"""A paged listing whose continue token expired is listed again (``handlers.wrap_kopf_watch``),
against the real API server: the listing is paused after its first page until the API server
refuses the page's continue token (410), and then goes on; kopf gets each object once.

The API server serves later pages from its watch cache's snapshot of the listing's revision
(Kubernetes 1.34+) and drops the snapshot only when its own compactor has compacted etcd past
it (every 5 minutes, to the revision of the round before): the wait takes 5 to 10 minutes, so
the test runs with ``--slow``. Compacting etcd here as well makes the etcd path expire too.

kopf alone ends the operator there (a standby listing 30,000 objects at 5,000 agents did, see
docs/benchmarks.md). The unit tests feed the wrapper a made-up 410; this one gets the API
server's own.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import kopf
import pytest
from kopf._cogs.clients import auth, fetching, watching  # private: the wrapper wraps them
from kopf._cogs.structs import credentials
from kopf._cogs.structs.references import Resource
from vestige_operator import handlers

from tests import cluster
from tests.integration.conftest import Kubectl

N = 4
#: Two rounds of the API server's compactor (--etcd-compaction-interval, 5 minutes) and a margin.
EXPIRY_SECONDS = 11 * 60


def _etcd(st: cluster.ClusterState, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """etcd's JSON gateway (the local cluster's etcd listens on 127.0.0.1 without TLS)."""
    req = urllib.request.Request(
        f"http://127.0.0.1:{st.ports['etcd']}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return dict(json.loads(resp.read()))


def _compact(st: cluster.ClusterState) -> None:
    """Compact etcd up to its current revision."""
    key = base64.b64encode(b"/registry/namespaces/default").decode()
    revision = int(_etcd(st, "/v3/kv/range", {"key": key})["header"]["revision"])
    _etcd(st, "/v3/kv/compaction", {"revision": revision, "physical": True})


def _continue_expired(kubectl: Kubectl, ns: str, token: str) -> bool:
    proc = kubectl(
        "get", "--raw", f"/api/v1/namespaces/{ns}/configmaps?limit=1&continue={token}", check=False
    )
    return proc.returncode != 0 and ("410" in proc.stderr or "Expired" in proc.stderr)


@pytest.mark.slow
async def test_an_expired_paged_listing_is_listed_again(
    cluster_state: cluster.ClusterState,
    kubectl: Kubectl,
    namespace: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    for i in range(N):
        kubectl("create", "configmap", f"cm-{i}", "-n", namespace)
    # With kube-root-ca.crt, which the controller manager adds to every namespace.
    names = kubectl("get", "configmaps", "-n", namespace, "-o", "name").stdout.split()
    names = [n.removeprefix("configmap/") for n in names]
    # A continue token of the same era as the listing's, to see when the API server expires it.
    page = json.loads(kubectl("get", "--raw", f"/api/v1/namespaces/{namespace}/configmaps?limit=1").stdout)
    token = page["metadata"]["continue"]

    monkeypatch.setenv("KUBECONFIG", cluster_state.kubeconfig)
    settings = kopf.OperatorSettings()
    settings.watching.chunk_size = 1  # one object a page: the listing pauses after each
    info = kopf.login_with_kubeconfig(settings=settings)
    assert info is not None
    vault = credentials.Vault()
    await vault.populate({"kubeconfig": info})
    auth.vault_var.set(vault)

    # The first listing waits after its first page until the API server expires its token.
    real_fetch = fetching.fetch_objs
    fetches = 0

    async def paused_fetch(**kwargs: Any) -> AsyncIterator[Any]:
        nonlocal fetches
        fetches += 1
        pages = 0
        async for page in real_fetch(**kwargs):
            yield page
            pages += 1
            if fetches == 1 and pages == 1:
                _compact(cluster_state)
                deadline = time.monotonic() + EXPIRY_SECONDS
                while not _continue_expired(kubectl, namespace, token):
                    assert time.monotonic() < deadline, "the API server kept the listing's snapshot"
                    await asyncio.sleep(5)

    monkeypatch.setattr(fetching, "fetch_objs", paused_fetch)
    real = getattr(watching.continuous_watch, "__wrapped__", watching.continuous_watch)
    handlers.wrap_kopf_watch()
    stream = watching.continuous_watch(
        settings=settings,
        resource=Resource("", "v1", "configmaps", kind="ConfigMap", namespaced=True),
        namespace=namespace,
        operator_pause_waiter=asyncio.get_running_loop().create_future(),
    )
    listed: list[str] = []
    try:
        with caplog.at_level(logging.WARNING, logger=handlers.logger.name):
            async for event in stream:
                if event is watching.Bookmark.LISTED:
                    break
                listed.append(event["object"]["metadata"]["name"])
    finally:
        await stream.aclose()
        watching.continuous_watch = real
        await vault.close()
    assert fetches == 2
    assert "listing of configmaps expired" in caplog.text
    # The page after the first failed; the listing started again. kopf got every object once:
    # nothing of the aborted listing.
    assert sorted(listed) == sorted(names)
