"""Status conditions: what a person reads in ``kubectl describe kt``, and what the operator reads
back after a restart (the agent's last report, when the agent pod became unready).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

from kubetunnel.records import Condition, TunnelStatus, now

ACCEPTED = "Accepted"
"""False when the record cannot be served (Service missing, already tunneled, no selector)."""
AGENT_READY = "AgentReady"
"""The agent pod is Ready; its lastTransitionTime starts the grace period (if one is set) when
it is not."""
AGENT_CONNECTED = "AgentConnected"
"""The agent's last report: a CLI is attached and the local process answers."""
SWITCHED = "SelectorSwitched"
"""The Service's selector points at the tunnel pod; reason says why not when False."""

CHANGED_BY_SOMEONE = "SelectorChangedByUser"

Status = Literal["True", "False", "Unknown"]


def find(status: TunnelStatus, kind: str) -> Condition | None:
    return next((c for c in status.conditions if c.type == kind), None)


def message(status: TunnelStatus, kind: str) -> str:
    found = find(status, kind)
    return found.message if found is not None else ""


def is_true(status: TunnelStatus, kind: str) -> bool:
    found = find(status, kind)
    return found is not None and found.status == "True"


def with_condition(
    status: TunnelStatus, kind: str, value: Status, reason: str, message: str = ""
) -> TunnelStatus:
    """``status`` with condition ``kind`` set; lastTransitionTime moves only when the value does."""
    current = find(status, kind)
    if current is not None and (current.status, current.reason, current.message) == (
        value, reason, message
    ):
        return status
    since = current.last_transition if current is not None and current.status == value else now()
    updated = Condition(kind, value, reason, message, since)
    others = tuple(c for c in status.conditions if c.type != kind)
    ordered = sorted((*others, updated), key=lambda c: _ORDER.get(c.type, 99))
    # replace(), not a new status: fields the conditions know nothing of (an intercept's
    # counts) stay as they were.
    return replace(status, conditions=tuple(ordered))


def without(status: TunnelStatus, kind: str) -> TunnelStatus:
    return replace(status, conditions=tuple(c for c in status.conditions if c.type != kind))


_ORDER = {ACCEPTED: 0, AGENT_READY: 1, AGENT_CONNECTED: 2, SWITCHED: 3}
