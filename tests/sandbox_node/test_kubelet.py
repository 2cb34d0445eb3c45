"""The process kubelet: pods become processes with the status Kubernetes would report."""

from __future__ import annotations

import asyncio
from pathlib import Path

from modes.sandbox.node.store import PODS
from tests.sandbox_node.helpers import (
    container_status,
    echo_pod,
    http_get,
    is_ready,
    running_kubelet,
    status,
)


async def test_echo_pod_becomes_ready_and_answers_with_its_name(tmp_path: Path) -> None:
    async with running_kubelet(tmp_path) as (store, _):
        store.put(PODS, echo_pod("echo-a"))
        await store.wait_for(lambda: is_ready(store, "echo-a"))  # how fast: bench/sandbox_node.py
        st = status(store, "echo-a")
        assert st["phase"] == "Running"
        assert st["podIP"].startswith("127.77.")
        assert st["hostIP"] == "127.0.0.1"
        assert container_status(store, "echo-a")["restartCount"] == 0
        assert "running" in container_status(store, "echo-a")["state"]
        assert await http_get(st["podIP"], 8080, "/any/path") == (200, b"echo-a")


async def test_two_pods_get_distinct_addresses_on_the_same_port(tmp_path: Path) -> None:
    async with running_kubelet(tmp_path) as (store, _):
        store.put(PODS, echo_pod("one"))
        store.put(PODS, echo_pod("two"))
        await store.wait_for(lambda: is_ready(store, "one") and is_ready(store, "two"))
        ips = {status(store, n)["podIP"] for n in ("one", "two")}
        assert len(ips) == 2
        assert sorted([(await http_get(ip, 8080))[1] for ip in ips]) == [b"one", b"two"]


async def test_unknown_image_stays_pending_with_a_reason(tmp_path: Path) -> None:
    async with running_kubelet(tmp_path) as (store, kubelet):
        pod = echo_pod("nginx", container={"image": "nginx:1.25"})
        store.put(PODS, pod)
        await store.wait_for(lambda: "waiting" in container_status(store, "nginx").get("state", {})
                             and container_status(store, "nginx")["state"]["waiting"]["reason"]
                             == "ErrImageNeverPull")
        waiting = container_status(store, "nginx")["state"]["waiting"]
        assert "nginx:1.25" in waiting["message"]
        assert "cannot run in the sandbox" in waiting["message"]
        assert status(store, "nginx")["phase"] == "Pending"
        assert not is_ready(store, "nginx")
        worker = kubelet.find("default", "nginx")
        assert worker is not None
        assert worker.workers["echo"].log is None  # no process was ever started


async def test_crashing_container_restarts_with_back_off(tmp_path: Path) -> None:
    async with running_kubelet(tmp_path) as (store, _):
        pod = echo_pod("crash", container={"image": "ghcr.io/acme/kubetunnel:1.0",
                                           "args": ["no-such-command"], "readinessProbe": None})
        del pod["spec"]["containers"][0]["readinessProbe"]
        store.put(PODS, pod)
        seen_backoff = []

        def restarted_twice() -> bool:
            cs = container_status(store, "crash")
            if cs.get("state", {}).get("waiting", {}).get("reason") == "CrashLoopBackOff":
                seen_backoff.append(cs["state"]["waiting"]["message"])
            return bool(cs.get("restartCount", 0) >= 2)

        await store.wait_for(restarted_twice, timeout=10)
        cs = container_status(store, "crash")
        assert cs["lastState"]["terminated"]["exitCode"] == 2  # click's usage error
        assert seen_backoff
        assert seen_backoff[0].startswith("back-off 0.3s restarting failed container=echo")
        assert status(store, "crash")["phase"] == "Running"


async def test_restart_policy_decides_the_final_phase(tmp_path: Path) -> None:
    async with running_kubelet(tmp_path) as (store, _):
        ok = echo_pod("ok", container={"image": "kubetunnel", "command": ["kubetunnel"],
                                       "args": ["version"]}, restartPolicy="OnFailure")
        bad = echo_pod("bad", container={"image": "kubetunnel", "args": ["nope"]},
                       restartPolicy="Never")
        for pod in (ok, bad):
            del pod["spec"]["containers"][0]["readinessProbe"]
            store.put(PODS, pod)
        await store.wait_for(lambda: status(store, "ok").get("phase") == "Succeeded"
                             and status(store, "bad").get("phase") == "Failed", timeout=10)
        assert container_status(store, "ok")["state"]["terminated"]["reason"] == "Completed"
        assert container_status(store, "bad")["state"]["terminated"]["exitCode"] == 2
        assert container_status(store, "bad")["restartCount"] == 0


async def test_failing_liveness_probe_restarts_the_container(tmp_path: Path) -> None:
    async with running_kubelet(tmp_path) as (store, _):
        probe = {"tcpSocket": {"port": 9}, "failureThreshold": 1, "periodSeconds": 1}
        store.put(PODS, echo_pod("sick", container={"livenessProbe": probe}))
        await store.wait_for(lambda: container_status(store, "sick").get("restartCount", 0) >= 1,
                             timeout=10)
        assert "terminated" in container_status(store, "sick")["lastState"]


async def test_graceful_deletion_stops_the_process_then_removes_the_pod(tmp_path: Path) -> None:
    async with running_kubelet(tmp_path) as (store, kubelet):
        store.put(PODS, echo_pod("gone"))
        await store.wait_for(lambda: is_ready(store, "gone"))
        ip = status(store, "gone")["podIP"]
        store.request_delete(PODS, "default", "gone", grace=60)
        await store.wait_for(lambda: store.current(PODS, "default", "gone") is None, timeout=30)
        # Gone well before the 60 s grace: echo honours SIGTERM, no SIGKILL was needed.
        assert kubelet.find("default", "gone") is None
        try:
            await http_get(ip, 8080)
        except OSError:
            pass
        else:
            raise AssertionError("the pod still answers after its deletion")


async def test_pod_removed_outright_is_killed(tmp_path: Path) -> None:
    async with running_kubelet(tmp_path) as (store, kubelet):
        store.put(PODS, echo_pod("abrupt"))
        await store.wait_for(lambda: is_ready(store, "abrupt"))
        await store.delete(PODS, "default", "abrupt")
        async with asyncio.timeout(3):
            while kubelet.pods:  # noqa: ASYNC110 - the kubelet has no event for this; poll
                await asyncio.sleep(0.05)
