"""The watch caches' entries: compaction, trimming, packing and cache uids (pure)."""

from __future__ import annotations

import base64
import json

from vestige_operator.caches import (
    PACKED,
    Packed,
    cached_uids,
    compact,
    pack_child,
    slim_child,
    trim,
    unpacked,
)


def _deployment(name: str) -> dict:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "uid": f"uid-{name}",
            "labels": {"app.kubernetes.io/managed-by": "vestige-operator"},
            "managedFields": [{"manager": "vestige-operator", "fieldsV1": {"f:spec": {}}}],
        },
        "spec": {
            "template": {"spec": {"containers": [{"image": "example.org/vestige:3", "name": "vestige"}]}}
        },
    }


TOKEN = "s3cr3t-token-value"


def _secret(**annotations: str) -> dict:
    """The operator's token Secret as the API server returns it."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "a-auth", "uid": "u1", **({"annotations": annotations} if annotations else {})},
        "data": {"token": base64.b64encode(TOKEN.encode()).decode()},
        "type": "Opaque",
    }


def test_compact_is_an_equal_deep_copy_that_shares_short_strings() -> None:
    # Parsed separately, as two watch events are: equal strings are distinct objects.
    a = json.loads(json.dumps(_deployment("a")))
    b = json.loads(json.dumps(_deployment("b")))
    assert (
        a["spec"]["template"]["spec"]["containers"][0]["image"]
        is not (b["spec"]["template"]["spec"]["containers"][0]["image"])
    )
    ca, cb = compact(a), compact(b)
    assert ca == a and cb == b
    assert ca is not a and ca["metadata"] is not a["metadata"]
    image_a = ca["spec"]["template"]["spec"]["containers"][0]["image"]
    image_b = cb["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image_a is image_b  # one shared object
    key_a = next(k for k in ca["metadata"]["labels"])
    key_b = next(k for k in cb["metadata"]["labels"])
    assert key_a is key_b


def test_compact_leaves_long_strings_and_other_values_alone() -> None:
    long = "x" * 1000
    value = json.loads(json.dumps({"s": long, "n": 3, "f": 1.5, "b": True, "z": None, "l": [long]}))
    out = compact(value)
    assert out == value
    assert out["s"] is value["s"]  # not interned, not copied


def test_trim_drops_managed_fields_and_never_keeps_secret_values() -> None:
    deployment = trim(_deployment("a"))
    assert "managedFields" not in deployment["metadata"]
    secret = _secret()
    kept = trim(secret)
    assert "data" not in kept and "stringData" not in kept
    assert set(kept["tokenHashes"]) == {"token"}
    assert TOKEN not in json.dumps(kept) and secret["data"]["token"] not in json.dumps(kept)


def test_a_packed_child_unpacks_to_its_trim_and_is_smaller() -> None:
    body = json.loads(json.dumps(_deployment("a")))
    packed = pack_child(body)
    assert packed.uid == "uid-a"
    assert packed.unpack() == trim(body)
    assert packed.unpack() is not packed.unpack()  # each pass gets its own copy to read
    assert len(packed._data) < len(json.dumps(trim(body)))


def test_a_packed_secret_holds_no_value_of_it() -> None:
    secret = _secret()
    packed = pack_child(secret)
    assert "data" not in packed.unpack()
    kept = json.dumps(packed.unpack())
    assert TOKEN not in kept and secret["data"]["token"] not in kept


def test_unpacked_gives_the_children_of_a_key_without_the_skipped_uids() -> None:
    cache = {("ns", "a"): [pack_child(_deployment("a")), pack_child(_deployment("b"))]}
    assert [o["metadata"]["name"] for o in unpacked(cache, ("ns", "a"))] == ["a", "b"]
    assert [o["metadata"]["name"] for o in unpacked(cache, ("ns", "a"), {"uid-a"})] == ["b"]
    assert unpacked(cache, ("ns", "other")) == []


def test_cached_uids_collects_every_uid_of_a_cache() -> None:
    children = {
        ("ns", "a"): [pack_child(_deployment("a"))],
        ("ns", "b"): [pack_child(_deployment("b")), Packed({"metadata": {"name": "no-uid"}})],
        ("ns", "c"): [],
    }
    assert cached_uids(children) == {"uid-a", "uid-b"}
    owners = {("ns", "a"): [{"metadata": {"uid": "o-a"}}], ("ns", "b"): [{"metadata": {"name": "b"}}]}
    assert cached_uids(owners) == {"o-a"}


def test_a_slim_secret_gives_kopf_no_value_of_it() -> None:
    secret = _secret(**{"vestige.dev/rotated-at": "t"})
    stub = slim_child(secret)
    assert stub["metadata"] == secret["metadata"]
    assert stub[PACKED].uid == "u1"
    kept = json.dumps({k: v for k, v in stub.items() if k != PACKED}) + json.dumps(stub[PACKED].unpack())
    assert TOKEN not in kept and secret["data"]["token"] not in kept
