"""Filtered and mirrored records against the operator: who wins two conflicting records made
at once, and the shared agent's per-intercept counts in a report."""

from __future__ import annotations

from dataclasses import replace

import pytest

from kubetunnel.filters import Filter
from kubetunnel.intercepts import Mode
from kubetunnel.kube import KubeClient
from kubetunnel.plugins import Store
from kubetunnel.records import TunnelRecord
from modes.operator.conditions import find
from tests.operator import cluster
from tests.operator.conftest import OperatorFactory, record, report, token_of

APP = {"app": "orders"}


def filtered(namespace: str, name: str, dev: str) -> TunnelRecord:
    return replace(record(namespace, name, service="orders", client=f"{dev}@laptop"),
                   mode=Mode.FILTERED,
                   filter=Filter.from_dict({"headers": [{"name": "x-dev", "equals": dev}]}))


async def _get(store: Store, namespace: str, name: str) -> TunnelRecord:
    current = await store.get(namespace, name)
    assert current is not None, f"record {name} gone"
    return current


async def _refused(store: Store, namespace: str, name: str) -> TunnelRecord:
    async def probe() -> TunnelRecord:
        current = await _get(store, namespace, name)
        assert current.status.phase == "Failed", current.status
        return current

    return await cluster.eventually(probe)


@pytest.mark.parametrize("first", ["exclusive", "filtered"])
async def test_of_two_conflicting_records_made_at_once_the_later_is_refused(
    client: KubeClient, store: Store, namespace: str, start_operator: OperatorFactory,
    first: str,
) -> None:
    """Both records exist before the operator looks (two CLIs racing): whichever it reconciles
    first, the older one holds the Service. Names sort in creation order too, so a tie in the
    timestamps' second resolves the same way."""
    await cluster.create_service(client, namespace, "orders", APP)
    exclusive = record(namespace, "orders-x", service="orders", client="erin@desk")
    shared = filtered(namespace, "orders-0aaaaaaa", "alice")
    older, newer = (exclusive, replace(shared, name="orders-zaaaaaaa")) \
        if first == "exclusive" else (shared, exclusive)
    await store.create(older)
    await store.create(newer)
    op = await start_operator()

    refused = await _refused(store, namespace, newer.name)
    accepted = find(refused.status, "Accepted")
    assert accepted is not None
    assert accepted.reason == "ServiceAlreadyTunneled"
    if first == "exclusive":
        assert "erin@desk" in accepted.message
    else:
        assert "filtered or mirrored intercepts" in accepted.message
        assert "x-dev=alice" in accepted.message
    # The older one goes on: its agent is made, labelled for it.
    tunnel = "orders" + (".shared" if first == "filtered" else "-x")

    async def agent() -> bool:
        dep = await cluster.get_or_none(
            client, f"/apis/apps/v1/namespaces/{namespace}/deployments/kubetunnel-orders")
        assert dep is not None
        assert dep["metadata"]["labels"]["kubetunnel.dev/tunnel"] == tunnel
        return True

    await cluster.eventually(agent)
    await op.engine.wait_idle()
    assert (await _get(store, namespace, older.name)).status.phase != "Failed"
    assert (await _get(store, namespace, newer.name)).status.phase == "Failed"


async def test_reports_carry_an_intercepts_counts_and_bad_ones_change_nothing(
    client: KubeClient, store: Store, namespace: str, start_operator: OperatorFactory,
) -> None:
    await cluster.create_service(client, namespace, "orders", APP)
    await cluster.create_service(client, namespace, "billing", {"app": "billing"})
    op = await start_operator()
    await store.create(filtered(namespace, "orders-aaaaaaaa", "alice"))
    await store.create(record(namespace, "billing", client="bob@desk"))

    async def secrets() -> bool:
        for name in ("orders", "billing"):
            assert await cluster.get_or_none(
                client, f"/api/v1/namespaces/{namespace}/secrets/kubetunnel-{name}")
        return True

    await cluster.eventually(secrets)
    shared_token = await token_of(client, namespace, "orders")
    billing_token = await token_of(client, namespace, "billing")
    up = {"connected": True, "reason": "up"}

    status, payload = await report(op, namespace, "orders-aaaaaaaa", shared_token,
                                   {**up, "counts": {"requests": 7, "mirrorDropped": 2}})
    assert status == 202, payload
    async def counted() -> TunnelRecord:
        current = await _get(store, namespace, "orders-aaaaaaaa")
        assert (current.status.requests, current.status.mirror_dropped) == (7, 2)
        return current

    await cluster.eventually(counted)
    cases = [
        ("not-a-token", {**up, "counts": {"requests": 9}}, 401),
        (billing_token, {**up, "counts": {"requests": 9}}, 403),
        (shared_token, {**up, "counts": {"requests": -1}}, 400),
        (shared_token, {**up, "counts": {"requests": "9"}}, 400),
        (shared_token, {**up, "counts": {"requests": True}}, 400),
        (shared_token, {**up, "counts": {"requests": 9, "bogus": 1}}, 400),
        (shared_token, {**up, "counts": {"requests": 1 << 62}}, 400),
        (shared_token, {**up, "counts": [9]}, 400),
    ]
    for token, body, expected in cases:
        status, payload = await report(op, namespace, "orders-aaaaaaaa", token, body)
        assert status == expected, (body, payload)
        assert payload["message"]
        assert "\n" not in payload["message"]
    await op.engine.wait_idle()
    after = await _get(store, namespace, "orders-aaaaaaaa")
    assert (after.status.requests, after.status.mirror_dropped) == (7, 2)

    # Only the counts sent change: a report of requests keeps the dropped copies.
    status, _ = await report(op, namespace, "orders-aaaaaaaa", shared_token,
                             {**up, "counts": {"requests": 12}})
    assert status == 202

    async def recounted() -> bool:
        current = await _get(store, namespace, "orders-aaaaaaaa")
        assert (current.status.requests, current.status.mirror_dropped) == (12, 2)
        return True

    await cluster.eventually(recounted)
