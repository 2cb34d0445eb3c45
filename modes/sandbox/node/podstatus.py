"""A pod's status from its containers' states, as the kubelet computes it."""

from __future__ import annotations

from typing import Any

Obj = dict[str, Any]


def phase(
    init: list[Obj], containers: list[Obj], restart_policy: str, init_done: bool, init_failed: bool
) -> str:
    """Pending until every container has started once; Succeeded/Failed once none will run again."""
    if init_failed:
        return "Failed"
    if not init_done:
        return "Pending"
    states = [c["state"] for c in containers]
    if any("waiting" in s and not c["lastState"] for s, c in zip(states, containers, strict=True)):
        return "Pending"
    if any("running" in s for s in states):
        return "Running"
    if all("terminated" in s for s in states):
        codes = [s["terminated"]["exitCode"] for s in states]
        if restart_policy == "Always":
            return "Running"
        if all(code == 0 for code in codes):
            return "Succeeded"
        if restart_policy == "Never":
            return "Failed"
        return "Running"
    return "Running"  # restarting after a crash: waiting with a lastState


def condition(
    kind: str, ok: bool, since: dict[str, tuple[bool, str]], now: str, reason: str = ""
) -> Obj:
    """A condition whose lastTransitionTime moves only when its status does."""
    previous = since.get(kind)
    if previous is None or previous[0] != ok:
        since[kind] = (ok, now)
    cond: Obj = {
        "type": kind,
        "status": "True" if ok else "False",
        "lastProbeTime": None,
        "lastTransitionTime": since[kind][1],
    }
    if not ok and reason:
        cond["reason"] = reason
    return cond


def conditions(
    init_done: bool, containers: list[Obj], since: dict[str, tuple[bool, str]], now: str
) -> list[Obj]:
    ready = init_done and all(c["ready"] for c in containers)
    not_ready = sorted(c["name"] for c in containers if not c["ready"])
    reason = "ContainersNotReady"
    return [
        condition("PodReadyToStartContainers", True, since, now),
        condition("Initialized", init_done, since, now, "ContainersNotInitialized"),
        _with_message(condition("Ready", ready, since, now, reason), not_ready),
        _with_message(condition("ContainersReady", ready, since, now, reason), not_ready),
        condition("PodScheduled", True, since, now),
    ]


def _with_message(cond: Obj, not_ready: list[str]) -> Obj:
    if cond["status"] == "False" and not_ready:
        cond["message"] = f"containers with unready status: [{' '.join(not_ready)}]"
    return cond
