"""The children's cache kept from the watch (watch_cache.py): what each watch
event and each whole listing changes, and which owners then need a pass."""

from __future__ import annotations

from typing import Any

from vestige_operator.caches import slim_child, trim, trim_owner
from vestige_operator.vocabulary import LABEL_INSTANCE
from vestige_operator.watch_cache import ChildCache, OwnerCache


def _svc(name: str, uid: str, owner: str, port: int = 8080, ns: str = "team-a") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": ns,
            "uid": uid,
            "resourceVersion": str(port),
            "labels": {LABEL_INSTANCE: owner},
        },
        "spec": {"ports": [{"port": port}]},
    }


def test_watch_events_add_change_and_delete_and_name_the_owner_due_a_pass() -> None:
    cache = ChildCache()
    assert cache.apply("ADDED", slim_child(_svc("a", "u1", "a"))) == {("team-a", "a")}
    assert [p.unpack() for p in cache["team-a", "a"]] == [trim(_svc("a", "u1", "a"))]
    # The same object again (a resync of the watch, a status-only bump trimmed away): no pass.
    assert cache.apply("MODIFIED", slim_child(_svc("a", "u1", "a"))) == set()
    assert cache.apply("MODIFIED", _svc("a", "u1", "a", port=9090)) == {("team-a", "a")}
    assert cache["team-a", "a"][0].unpack()["spec"]["ports"] == [{"port": 9090}]
    assert cache.apply("DELETED", _svc("a", "u1", "a", port=9090)) == {("team-a", "a")}
    assert ("team-a", "a") not in cache and len(cache) == 0


def test_a_child_relabelled_to_another_owner_moves_and_both_owners_get_a_pass() -> None:
    cache = ChildCache()
    cache.apply("ADDED", _svc("x", "u1", "a"))
    assert cache.apply("MODIFIED", _svc("x", "u1", "b")) == {("team-a", "a"), ("team-a", "b")}
    assert ("team-a", "a") not in cache and len(cache["team-a", "b"]) == 1
    # Losing the label is leaving the cache: the operator no longer sees it as a child.
    unlabelled = _svc("x", "u1", "b")
    del unlabelled["metadata"]["labels"]
    assert cache.apply("MODIFIED", unlabelled) == {("team-a", "b")}
    assert len(cache) == 0


def test_the_same_owner_name_in_two_namespaces_is_two_keys() -> None:
    cache = ChildCache()
    cache.apply("ADDED", _svc("a", "u1", "a", ns="team-a"))
    cache.apply("ADDED", _svc("a", "u2", "a", ns="team-b"))
    assert sorted(cache) == [("team-a", "a"), ("team-b", "a")]


def test_a_listing_replaces_everything_and_names_only_the_owners_whose_children_changed() -> None:
    cache = ChildCache()
    assert not cache.listed
    cache.replace([_svc("a", "u1", "a"), _svc("b", "u2", "b"), _svc("c", "u3", "c")])
    assert cache.listed and sorted(cache) == [("team-a", "a"), ("team-a", "b"), ("team-a", "c")]
    # While nothing watched: b changed, c was deleted, d was created, a stayed as it was.
    changed = cache.replace([_svc("a", "u1", "a"), _svc("b", "u2", "b", port=1), _svc("d", "u4", "d")])
    assert changed == {("team-a", "b"), ("team-a", "c"), ("team-a", "d")}
    assert sorted(cache) == [("team-a", "a"), ("team-a", "b"), ("team-a", "d")]
    assert cache.apply("DELETED", _svc("c", "u3", "c")) == set()  # already gone


def test_objects_without_uid_or_owner_label_are_not_kept() -> None:
    cache = ChildCache()
    no_uid = _svc("a", "", "a")
    assert cache.apply("ADDED", no_uid) == set()
    assert cache.replace([no_uid]) == set() and len(cache) == 0


def _memory(
    name: str, uid: str, host: str | None = None, created: str = "2026-12-01T00:00:00Z"
) -> dict[str, Any]:
    spec: dict[str, Any] = {"storage": {"size": "1Gi"}}
    if host is not None:
        spec["ingress"] = {"enabled": True, "host": host, "path": "/mem"}
    return {
        "apiVersion": "vestige.dev/v1alpha1",
        "kind": "VestigeMemory",
        "metadata": {"name": name, "namespace": "team-a", "uid": uid, "creationTimestamp": created},
        "spec": spec,
        "status": {"phase": "Ready"},
    }


def test_owner_cache_keeps_each_memory_and_its_ingress_claim() -> None:
    owners = OwnerCache()
    hosts = owners.hosts  # the view the reconciler holds from the start
    owners.event("ADDED", _memory("a", "u1", host="Mem.Example.org"))
    owners.event("ADDED", _memory("b", "u2", host="mem.example.org", created="2026-12-02T00:00:00Z"))
    assert owners[("team-a", "a")] == (trim_owner(_memory("a", "u1", host="Mem.Example.org")),)
    assert [c.name for c in hosts["mem.example.org"]] == ["a", "b"]
    # b moves to another host: its old claim goes.
    owners.event("MODIFIED", _memory("b", "u2", host="other.example.org"))
    assert [c.name for c in hosts["mem.example.org"]] == ["a"] and "other.example.org" in hosts
    # A deletion of an older object of the same name leaves the newer one alone.
    owners.event("ADDED", _memory("c", "u3"))
    owners.event("DELETED", _memory("c", "u-older"))
    assert ("team-a", "c") in owners
    owners.event("DELETED", _memory("a", "u1"))
    assert ("team-a", "a") not in owners and "mem.example.org" not in hosts


def test_a_listing_replaces_the_owner_cache_and_the_host_view_follows() -> None:
    owners = OwnerCache()
    hosts = owners.hosts
    owners.event("ADDED", _memory("gone", "u0", host="old.example.org"))
    assert not owners.listed
    owners.listing([_memory("a", "u1", host="new.example.org"), {"metadata": {}}])
    assert owners.listed and list(owners) == [("team-a", "a")] and len(owners) == 1
    assert list(hosts) == ["new.example.org"] and len(hosts) == 1


def test_a_relist_tells_of_memories_deleted_while_no_watch_ran() -> None:
    gone: list[Any] = []
    owners = OwnerCache(gone=lambda key, uid: gone.append((key, uid)))
    owners.listing([_memory("a", "u1"), _memory("b", "u2"), _memory("c", "u3")])
    assert gone == []
    # b was deleted, c deleted and created again while the watch was down.
    owners.listing([_memory("a", "u1"), _memory("c", "u4")])
    assert sorted(gone) == [(("team-a", "b"), "u2"), (("team-a", "c"), "u3")]
    assert owners[("team-a", "c")][0]["metadata"]["uid"] == "u4"
