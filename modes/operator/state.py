"""What the operator keeps in memory: caches fed by watches, never the only copy of anything.

Everything here can be rebuilt from the cluster after a restart (records from the store, pods
from the API, tokens from the Secrets), which is what makes the operator restart-safe.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from kubetunnel.records import TunnelRecord
from modes.operator.objects import TUNNEL_LABEL

Key = tuple[str, str]
_LATEST = datetime.max.replace(tzinfo=UTC)


def record_key(record: TunnelRecord) -> Key:
    return (record.namespace, record.name)


def pod_ready(pod: dict[str, Any]) -> bool:
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class State:
    def __init__(self) -> None:
        self.records: dict[Key, TunnelRecord] = {}
        self.pods: dict[Key, dict[str, Any]] = {}
        # record key -> (record uid, token, when checked against its Secret)
        self._tokens: dict[Key, tuple[str, str, float]] = {}
        self._token_owners: dict[bytes, Key] = {}
        self.ensured: dict[tuple[Key, str], float] = {}
        self.unready: dict[Key, datetime] = {}  # agent pods seen not Ready, since when
        self.heard: dict[Key, datetime] = {}  # last authenticated report from each agent
        self.origins: dict[Key, str] = {}  # each record's origin Service ClusterIP

    # -- records -------------------------------------------------------------------------------
    def put_record(self, record: TunnelRecord) -> None:
        self.records[record_key(record)] = record

    def drop_record(self, key: Key) -> None:
        self.records.pop(key, None)
        entry = self._tokens.pop(key, None)
        if entry is not None:
            self._token_owners.pop(_digest(entry[1]), None)
        self.unready.pop(key, None)
        self.heard.pop(key, None)
        self.origins.pop(key, None)
        for ensured in [k for k in self.ensured if k[0] == key]:
            del self.ensured[ensured]

    def all_records(self) -> Iterable[TunnelRecord]:
        return list(self.records.values())

    def same_service(self, record: TunnelRecord) -> list[TunnelRecord]:
        """Records for ``record``'s Service, oldest first: the first one holds the Service."""
        found = [
            r for r in self.records.values()
            if r.namespace == record.namespace and r.service == record.service
        ]
        return sorted(found, key=lambda r: (r.created_at or _LATEST, r.name))

    # -- pods ----------------------------------------------------------------------------------
    def put_pod(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        self.pods[(meta.get("namespace", ""), meta["name"])] = pod

    def drop_pod(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        self.pods.pop((meta.get("namespace", ""), meta["name"]), None)

    def agent_pods(self, key: Key) -> list[dict[str, Any]]:
        namespace, name = key
        return [
            pod for (ns, _), pod in self.pods.items()
            if ns == namespace and (pod["metadata"].get("labels") or {}).get(TUNNEL_LABEL) == name
        ]

    # -- tokens --------------------------------------------------------------------------------
    def put_token(self, key: Key, uid: str, token: str) -> None:
        previous = self._tokens.get(key)
        if previous is not None:
            self._token_owners.pop(_digest(previous[1]), None)
        self._tokens[key] = (uid, token, time.monotonic())
        self._token_owners[_digest(token)] = key

    def token(self, key: Key, uid: str | None = None, max_age: float | None = None) -> str | None:
        entry = self._tokens.get(key)
        if entry is None or (uid is not None and entry[0] != uid):
            return None
        if max_age is not None and time.monotonic() - entry[2] > max_age:
            return None
        return entry[1]

    def token_owner(self, token: str) -> Key | None:
        """Which tunnel a presented token belongs to (only to tell 403 from 401)."""
        return self._token_owners.get(_digest(token))

    # -- objects checked recently (ServiceAccount) ---------------------------------------------
    def recently_ensured(self, key: Key, what: str, max_age: float) -> bool:
        at = self.ensured.get((key, what))
        return at is not None and time.monotonic() - at < max_age

    def mark_ensured(self, key: Key, what: str) -> None:
        self.ensured[(key, what)] = time.monotonic()
