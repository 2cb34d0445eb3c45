"""The live line of `cli connect` names where new connections go and why, for each state."""

from __future__ import annotations

from dataclasses import replace

import pytest

from kubetunnel.records import PortMapping, TunnelRecord
from kubetunnel.stores.memory import MemoryStore
from modes.cli.liveline import (
    LOCAL,
    VIA_AGENT,
    VIA_SELECTOR,
    Observed,
    RecordFollower,
    Switches,
    route,
)
from tests.operator.cluster import eventually


def _seen(**changes: object) -> Observed:
    base: dict[str, object] = dict(tunnel_up=True, answering=True, draining=False, switched=True,
                                   agent_ready=True, agent_reported_up=True, up_for=5.0)
    base.update(changes)
    return Observed(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(("changes", "expected"), [
    ({}, (LOCAL, "")),
    ({"answering": False}, (VIA_AGENT, "local process down")),
    ({"tunnel_up": False}, (VIA_AGENT, "tunnel reconnecting")),
    ({"draining": True}, (VIA_AGENT, "disconnecting")),
    ({"tunnel_up": False, "agent_ready": False},
     (VIA_SELECTOR, "tunnel pod not Ready; the operator is restoring the Service")),
    ({"switched": False, "tunnel_up": False, "agent_ready": False},
     (VIA_SELECTOR, "tunnel pod not Ready")),
    ({"switched": False, "answering": False}, (VIA_SELECTOR, "local process down")),
    ({"switched": False, "agent_reported_up": False},
     (VIA_SELECTOR, "operator unreachable (the agent's report is not recorded)")),
    ({"switched": False, "agent_reported_up": False, "up_for": 0.2},
     (VIA_SELECTOR, "waiting for the operator to switch the Service")),
    ({"switched": False}, (VIA_SELECTOR, "waiting for the operator to switch the Service")),
])
def test_route(changes: dict[str, object], expected: tuple[str, str]) -> None:
    assert route(_seen(**changes)) == expected


def test_each_switch_is_said_once_with_its_time() -> None:
    switches = Switches()
    assert switches.update((VIA_SELECTOR, "waiting for the operator to switch the Service")) \
        is None  # where every tunnel starts
    line = switches.update((LOCAL, ""))
    assert line is not None
    assert line.endswith(" traffic -> local")
    assert switches.update((LOCAL, "")) is None
    line = switches.update((VIA_AGENT, "local process down"))
    assert line is not None
    assert line.endswith("traffic -> cluster via agent (local process down)")
    assert line.split()[0] == switches.last_change


async def test_record_follower_sees_changes_and_the_end() -> None:
    store = MemoryStore()
    record = await store.create(TunnelRecord(
        namespace="shop", name="orders", service="orders", client="ada@laptop",
        ports=(PortMapping(service_port=80, local_port=8080),)))
    await store.create(TunnelRecord(
        namespace="shop", name="billing", service="billing", client="bob@laptop",
        ports=(PortMapping(service_port=80, local_port=8081),)))
    follower = RecordFollower(store, record)
    follower.start()
    try:
        await store.replace_status(record.replace(status=replace(record.status, connected=True)))

        async def connected() -> bool:
            current = follower.current
            return current is not None and current.name == "orders" and current.status.connected

        await eventually(connected, timeout=5)
        await store.delete("shop", "orders")

        async def gone() -> bool:
            return follower.gone

        await eventually(gone, timeout=5)
    finally:
        await follower.aclose()
