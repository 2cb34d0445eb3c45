"""What ``cli connect`` checks and shows for filtered and mirrored intercepts.

The CLI refuses a connect that cannot coexist with the intercepts already on the Service before
it writes anything, naming who holds them; the operator makes the same decision again (two CLIs
may race past this check), and the later record then fails with a condition the CLI prints.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from typing import Any

from kubetunnel.errors import UsageError
from kubetunnel.intercepts import Intercept, Intercepts, Mode
from kubetunnel.plugins import Store
from kubetunnel.records import PortMapping, TunnelRecord, now

HTTP_PROTOCOLS = frozenset({"http", "http2", "h2c", "grpc", "grpc-web", "kubernetes.io/h2c",
                            "kubernetes.io/ws"})
"""``appProtocol`` values the agent can route (anything else is relayed to the cluster)."""
NOT_HTTP_NAMES = ("https", "tls", "tcp", "udp", "mongo", "mysql", "redis", "postgres", "amqp",
                  "kafka", "grpcs")
"""Port name prefixes that say the protocol is not HTTP (Istio's ``<protocol>[-suffix]``)."""


def intercept_name(service: str) -> str:
    """A filtered or mirrored record's name: ``<service>-<8 hex>`` (a DNS label)."""
    return f"{service[:54].rstrip('-')}-{secrets.token_hex(4)}"


async def check_intercepts(store: Store, namespace: str, settings: Any,
                           note: Callable[[str], None]) -> None:
    """Refuse a conflicting connect (one line naming holders and filters); warn of overlaps."""
    records = [r for r in await store.list(namespace)
               if r.service == settings.service and not r.deleting]
    existing = Intercepts(r.intercept() for r in records)
    new = Intercept("new", settings.mode, settings.filter, now().timestamp(), settings.identity)
    conflicts = existing.conflicts(new)
    if conflicts:
        held = "; ".join(_who(i) for i in conflicts)
        if new.mode is Mode.EXCLUSIVE and all(i.mode is not Mode.EXCLUSIVE for i in conflicts):
            raise UsageError(
                f"Service {namespace}/{settings.service} has filtered or mirrored intercepts "
                f"by {held}; a plain connect takes the whole Service: wait until they "
                "disconnect, or connect with --header or --path-prefix too")
        raise UsageError(
            f"Service {namespace}/{settings.service} is already tunneled by {held}; ask them "
            f"to disconnect, or run 'kubetunnel cli disconnect {settings.service}'")
    for other in existing.overlapping(new):
        note(f"warning: your filter ({new.filter.describe()}) overlaps {_who(other)}: a "
             "request both match goes to theirs (first made wins)")


def _who(intercept: Intercept) -> str:
    if intercept.mode is Mode.EXCLUSIVE:
        return intercept.holder
    return f"{intercept.holder} ({intercept.mode.value}: {intercept.filter.describe()})"


def non_http_ports(service: dict[str, Any], mappings: Sequence[PortMapping]) -> list[str]:
    """Warnings for mapped ports whose ``appProtocol`` or name says they do not speak HTTP:
    their traffic is relayed to the cluster untouched, so no request would match a filter."""
    wanted = {m.service_port for m in mappings}
    warnings = []
    for port in (service.get("spec") or {}).get("ports") or []:
        if port.get("port") not in wanted:
            continue
        protocol = (port.get("appProtocol") or "").lower()
        name = (port.get("name") or "").lower()
        if protocol and protocol not in HTTP_PROTOCOLS:
            why = f"appProtocol {protocol}"
        elif not protocol and name.split("-")[0] in NOT_HTTP_NAMES:
            why = f"name {name}"
        else:
            continue
        warnings.append(f"Service port {port['port']} says it is not HTTP ({why}): the agent "
                        "relays what it cannot parse as HTTP to the cluster, so filters match "
                        "nothing there")
    return warnings


def intercept_counts(record: TunnelRecord) -> str:
    """The live line's tail for a filtered or mirrored intercept."""
    if record.mode is Mode.EXCLUSIVE:
        return ""
    if record.mode is Mode.MIRROR:
        return (f" | copies {record.status.requests}, dropped "
                f"{record.status.mirror_dropped}")
    return f" | requests routed here {record.status.requests}"
