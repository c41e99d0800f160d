"""The token Secret's lifecycle, through the API port; its outcome is a typed value.

* ``<name>-auth`` (keys ``token`` and ``vestige-token``) is created once; with
  ``auth.existingSecret`` the user's Secret is only read and the operator's own
  ``<name>-vestige`` holds Vestige's internal token;
* the only writes of an existing Secret: add a missing ``vestige-token`` (once), carry out a
  rotation request (once per request id), remove the previous token when its grace period
  ends. They are decided from the watch cache (hashes and annotations, never values); when one
  is due the Secret is read, decided again on the fresh copy and replaced with its
  resourceVersion as a precondition (a concurrent change is a 409: retried, so one request
  rotates exactly once);
* a Secret of that name this resource did not create is never written nor used
  (``plan.ownership``: the same rule as every other child);
* a rotation that cannot be carried out (a grace annotation that is not a duration from 0 to
  ``tokens.MAX_GRACE``; a token in the user's ``existingSecret``) is refused: the outcome says
  why (a condition on the resource, one Warning Event when it appears), nothing is written;
* grace 0 revokes the old token at once; otherwise the outcome says when the previous token
  expires, and the reconciler asks for a pass then (requeue-after), instead of a timer here.
"""

from __future__ import annotations

import base64
import binascii
import logging
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from vestige_operator import cluster as k8s
from vestige_operator import tokens
from vestige_operator.api import VestigeMemorySpec
from vestige_operator.children import auth_secret_ref, render_secret, render_vestige_secret, token_hash
from vestige_operator.events import make_event
from vestige_operator.plan import ownership
from vestige_operator.port import ApiPort
from vestige_operator.times import format_time
from vestige_operator.vocabulary import Owner, vestige_secret_name

logger = logging.getLogger("vestige_operator.tokens")

Obj = Mapping[str, Any]

#: Reasons of the RotationRefused condition.
REFUSED_BAD_GRACE = "InvalidRotationGrace"
REFUSED_EXISTING_SECRET = "RotationNotApplicable"  # noqa: S105 (a condition reason)


def token_hash_of(encoded: str) -> str | None:
    """The fingerprint of a base64 Secret value (None when it is not base64)."""
    try:
        return token_hash(base64.b64decode(encoded, validate=True))
    except (binascii.Error, ValueError):
        return None


def secret_hashes(body: Obj) -> dict[str, str | None]:
    """What the caches keep of a Secret's data: a fingerprint per key, never a value."""
    if "tokenHashes" in body:
        return dict(body.get("tokenHashes") or {})
    return {k: token_hash_of(v) for k, v in (body.get("data") or {}).items()}


@dataclass(frozen=True, slots=True)
class TokenOutcome:
    """What the token Secret gives this pass.

    ``vestige_hash``: the fingerprint of Vestige's internal token (the pod template's
    annotation), None when unavailable. Exactly one of the following explains a None:
    ``problem`` (permanent: the Secret or its key is missing), ``not_owned`` (kind-free
    (reason, message): the name is held by a Secret this resource did not create), or
    ``unavailable`` (transient: the API could not be reached or changed under the pass; the
    pass is retried and the pod template kept as it is).
    """

    vestige_hash: str | None = None
    problem: str | None = None
    not_owned: tuple[str, str, str] | None = None  # (Secret name, reason, message)
    unavailable: str | None = None
    rotated_at: str | None = None
    #: (reason, message) of a rotation request that is not carried out.
    refused: tuple[str, str] | None = None
    #: When the previous token's grace period ends (the pass after it removes the token).
    previous_expires: datetime | None = None


class _Vanished(Exception):
    """The Secret disappeared between two requests of this pass (retried)."""


class TokenSecrets:
    """Carries out the token Secret's lifecycle for one VestigeMemory per call."""

    def __init__(
        self,
        port: ApiPort,
        *,
        now: Callable[[], datetime],
        clock: Callable[[], str],
        new_token: Callable[[], str] = lambda: secrets.token_urlsafe(32),
    ) -> None:
        self._port = port
        self._now = now
        self._clock = clock
        self._new_token = new_token

    async def ensure(
        self, owner: Owner, spec: VestigeMemorySpec, annotations: Mapping[str, str], cached: Iterable[Obj]
    ) -> TokenOutcome:
        name, key = auth_secret_ref(owner.name, spec)
        request = tokens.rotation_request(annotations)
        cached = list(cached)
        try:
            if spec.auth.existing_secret is not None:
                return await self._existing(owner, name, key, request, cached)
            secret = await self._own_secret(
                owner, name, cached, lambda: render_secret(owner, self._new_token(), self._new_token())
            )
            if isinstance(secret, TokenOutcome):
                return secret
            refused = None
            if request is not None and request.problem is not None:
                refused = (REFUSED_BAD_GRACE, request.problem)
                request = None  # never carried out with another grace
            secret = await self._maintain(owner, secret, request)
            hashes = secret_hashes(secret)
            if hashes.get(key) is None:
                return TokenOutcome(problem=f"Secret {name} has no usable key {key!r}", refused=refused)
            return TokenOutcome(
                vestige_hash=hashes.get(tokens.VESTIGE_TOKEN_KEY),
                problem=None
                if hashes.get(tokens.VESTIGE_TOKEN_KEY)
                else f"Secret {name} has no usable key {tokens.VESTIGE_TOKEN_KEY!r}",
                rotated_at=tokens.rotated_at(secret),
                refused=refused,
                previous_expires=tokens.previous_expires(secret),
            )
        except _Vanished as exc:
            return TokenOutcome(unavailable=str(exc))
        except k8s.ApiError as exc:
            if exc.transient:
                return TokenOutcome(unavailable=f"Secret {name}: {exc.message or exc}")
            return TokenOutcome(problem=f"Secret {name}: {exc.message or exc}")

    async def _existing(
        self,
        owner: Owner,
        name: str,
        key: str,
        request: tokens.RotationRequest | None,
        cached: list[Obj],
    ) -> TokenOutcome:
        """``auth.existingSecret``: the user's Secret is read (not labelled, hence not watched),
        never written; Vestige's internal token lives in the operator's ``<name>-vestige``."""
        found = await self._port.get(k8s.SECRET, owner.namespace, name)
        if found is None:
            return TokenOutcome(problem=f"Secret {name} (auth.existingSecret) not found")
        if secret_hashes(found).get(key) is None:
            return TokenOutcome(problem=f"Secret {name} has no usable key {key!r}")
        refused = None
        if request is not None:
            refused = (
                REFUSED_EXISTING_SECRET,
                f"token rotation requested, but the token comes from auth.existingSecret ({name}), "
                "which the operator never writes: rotate it in that Secret (the bridge follows it "
                "without a restart)",
            )
        internal_name = vestige_secret_name(owner.name)
        internal = await self._own_secret(
            owner, internal_name, cached, lambda: render_vestige_secret(owner, self._new_token())
        )
        if isinstance(internal, TokenOutcome):
            return TokenOutcome(
                problem=internal.problem,
                not_owned=internal.not_owned,
                unavailable=internal.unavailable,
                refused=refused,
            )
        digest = secret_hashes(internal).get(tokens.VESTIGE_TOKEN_KEY)
        if digest is None:
            return TokenOutcome(
                problem=f"Secret {internal_name} has no usable key {tokens.VESTIGE_TOKEN_KEY!r}",
                refused=refused,
            )
        return TokenOutcome(vestige_hash=digest, refused=refused)

    async def _own_secret(
        self, owner: Owner, name: str, cached: list[Obj], render: Callable[[], dict[str, Any]]
    ) -> Obj | TokenOutcome:
        """The operator's Secret ``name``: from the cache, else created (never overwritten); a
        Secret of that name this resource did not create is neither written nor used."""
        secret: Obj | None = next((s for s in cached if (s.get("metadata") or {}).get("name") == name), None)
        if secret is None:
            created = await self._port.create(render())
            if created is not None:
                logger.info("created Secret %s/%s", owner.namespace, name)
                return created
            secret = await self._port.get(k8s.SECRET, owner.namespace, name)  # cache lag, or not ours
            if secret is None:
                raise _Vanished(f"Secret {name} was deleted while this pass created it")
        verdict = ownership("Secret", secret, owner)
        if verdict.state == "owned":
            return secret
        if verdict.state == "stale":
            return TokenOutcome(unavailable=verdict.message)
        return TokenOutcome(not_owned=(name, verdict.reason, verdict.message))

    async def _maintain(self, owner: Owner, secret: Obj, request: tokens.RotationRequest | None) -> Obj:
        """Add a missing ``vestige-token``, rotate on request, remove an expired previous token."""
        now = self._now()
        request_id = request.id if request is not None else None

        def due(obj: Obj) -> tuple[bool, bool, bool]:
            hashes = secret_hashes(obj)
            return (
                hashes.get(tokens.VESTIGE_TOKEN_KEY) is None,
                tokens.rotation_due(obj, request_id),
                tokens.previous_expired({**obj, "tokenHashes": hashes}, now),
            )

        if not any(due(secret)):
            return secret
        name = (secret.get("metadata") or {}).get("name", "")
        full = await self._port.get(k8s.SECRET, owner.namespace, name)
        if full is None:
            raise _Vanished(f"Secret {name} was deleted while this pass read it")
        if ownership("Secret", full, owner).state != "owned":
            raise _Vanished(f"Secret {name} was replaced while this pass read it")
        add_internal, rotate, expire = due(full)
        body: dict[str, Any] = dict(full)
        notes: list[str] = []
        if add_internal:
            body = tokens.with_vestige_token(body, self._new_token())
            notes.append(f"added {tokens.VESTIGE_TOKEN_KEY}")
        event: dict[str, Any] | None = None
        if rotate and request is not None:
            body = tokens.rotated(body, request.id, self._new_token(), now, request.grace)
            notes.append("rotated the token")
            if request.grace.total_seconds() > 0:
                message = (
                    "token rotated on request; the previous token stays valid until "
                    f"{format_time(now + request.grace)}"
                )
            else:
                message = "token rotated on request; the previous token was revoked at once (grace 0)"
            event = make_event(owner, "Normal", "TokenRotated", message, self._clock())
        elif expire:
            body = tokens.without_previous(body)
            notes.append("removed the expired previous token")
        if not notes:
            return full
        result = await self._port.update(body)
        if result is None:
            raise _Vanished(f"Secret {name} was deleted while this pass wrote it")
        logger.info("updated Secret %s/%s: %s", owner.namespace, name, ", ".join(notes))
        if event is not None:
            await self._port.post_event(event)
        return result
