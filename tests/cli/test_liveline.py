"""The live line of `cli connect` names where new connections go and why, for each state."""

from __future__ import annotations

import pytest

from modes.cli.liveline import LOCAL, VIA_AGENT, VIA_SELECTOR, Observed, Switches, route


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
