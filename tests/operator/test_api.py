"""The agents' REST API: every refusal changes nothing; health, readiness and metrics."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from kubetunnel.kube import KubeClient
from kubetunnel.plugins import Store
from kubetunnel.records import TunnelRecord
from modes.operator.api import parse_report
from tests.operator import cluster
from tests.operator.conftest import OperatorFactory, record, report, token_of

APP = {"app": "orders"}


async def _snapshot(client: KubeClient, store: Store, namespace: str) -> tuple[Any, ...]:
    records = await store.list(namespace)
    services = await client.get(f"/api/v1/namespaces/{namespace}/services")
    return (
        [(r.name, r.resource_version) for r in records],
        [(s["metadata"]["name"], s["metadata"]["resourceVersion"]) for s in services["items"]],
    )


async def _ready(store: Store, namespace: str, name: str) -> TunnelRecord:
    async def probe() -> TunnelRecord:
        current = await store.get(namespace, name)
        assert current is not None
        assert current.status.phase == "Ready", current.status
        return current

    return await cluster.eventually(probe)


async def test_refusals_change_nothing(
    client: KubeClient, store: Store, namespace: str, start_operator: OperatorFactory
) -> None:
    await cluster.create_service(client, namespace, "orders", APP)
    await cluster.create_service(client, namespace, "billing", {"app": "billing"})
    op = await start_operator()
    await store.create(record(namespace))
    await store.create(record(namespace, "billing", client="bob@desk"))
    for name in ("orders", "billing"):
        await cluster.eventually(lambda n=name: cluster.get_or_none(  # type: ignore[misc]
            client, f"/apis/apps/v1/namespaces/{namespace}/deployments/kubetunnel-{n}"))
        await cluster.run_agent_pod(client, namespace, f"kubetunnel-{name}")
        await _ready(store, namespace, name)
    orders_token = await token_of(client, namespace, "orders")
    billing_token = await token_of(client, namespace, "billing")
    await op.engine.wait_idle()
    before = await _snapshot(client, store, namespace)

    good = {"connected": True, "reason": "up"}
    cases = [
        ("orders", None, good, None, 401),
        ("orders", "not-a-token", good, None, 401),
        ("orders", billing_token, good, None, 403),
        ("ghost", orders_token, good, None, 404),
        ("ghost", "not-a-token", good, None, 401),
        ("orders", orders_token, None, b"{not json", 400),
        ("orders", orders_token, {"connected": "yes"}, None, 400),
        ("orders", orders_token, {"connected": True, "reason": 5}, None, 400),
        ("orders", orders_token, None, b"[1, 2]", 400),
        # 2 KB of nesting: the JSON parser's recursion limit is a malformed body, not a crash.
        ("orders", orders_token, None, b"[" * 1000 + b"]" * 1000, 400),
        ("orders", orders_token, None, b'{"a":' * 1000 + b"1" + b"}" * 1000, 400),
        # Over the body limit: the same JSON problem body as every other refusal.
        ("orders", orders_token, None, b'{"connected": true, "reason": "' + b"x" * 70_000
         + b'"}', 413),
    ]
    for name, token, body, raw, expected in cases:
        status, payload = await report(op, namespace, name, token, body, raw)
        assert status == expected, (name, body, raw, payload)
        assert payload["message"]
    await op.engine.wait_idle()
    assert await _snapshot(client, store, namespace) == before
    assert await cluster.selector_of(client, namespace, "orders") == APP

    # The metrics saw every one of them.
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{op.api_port}/metrics") as resp:
            text = await resp.text()
        async with session.get(f"http://127.0.0.1:{op.health_port}/readyz") as resp:
            assert resp.status == 200
        async with session.get(f"http://127.0.0.1:{op.health_port}/healthz") as resp:
            assert resp.status == 200
    assert 'kubetunnel_reports_total{result="401"} 3.0' in text
    assert 'kubetunnel_reports_total{result="400"} 6.0' in text
    assert 'kubetunnel_reports_total{result="413"} 1.0' in text
    assert 'kubetunnel_tunnels{phase="Ready"} 2.0' in text
    assert "kubetunnel_reconcile_duration_seconds_count" in text


async def test_not_leader_is_not_ready_and_refuses_reports(
    client: KubeClient, store: Store, namespace: str, start_operator: OperatorFactory
) -> None:
    leader = await start_operator()
    follower = await start_operator(wait_synced=False)
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{follower.health_port}/readyz") as resp:
            assert resp.status == 503
        async with session.get(f"http://127.0.0.1:{follower.health_port}/healthz") as resp:
            assert resp.status == 200
        async with session.get(f"http://127.0.0.1:{leader.health_port}/readyz") as resp:
            assert resp.status == 200
    status, _ = await report(follower, namespace, "orders", "x", {"connected": True})
    assert status == 503


def test_parse_report_messages() -> None:
    assert parse_report(b'{"connected": false}') == (False, "")
    assert parse_report(b'{"connected": true, "reason": "ok", "extra": 1}') == (True, "ok")
    for raw in (b"", b"null", b'{"reason": "x"}', b'{"connected": 1}',
                b'{"connected": true, "reason": "' + b"x" * 2000 + b'"}',
                b"[" * 100_000 + b"]" * 100_000):
        with pytest.raises(ValueError, match=r"\w+ \w+"):
            parse_report(raw)


def test_openapi_contract_matches_the_routes() -> None:
    import yaml

    from modes.operator.api import STATUS_ROUTE, Api

    spec = yaml.safe_load((cluster.ROOT / "docs" / "operator-api.yaml").read_text())
    assert spec["openapi"].startswith("3.")
    app = Api(None).application()  # type: ignore[arg-type]
    routes = {(r.method, r.resource.canonical) for r in app.router.routes() if r.resource}
    documented = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
    assert documented == routes - {("HEAD", p) for _, p in routes}
    post = spec["paths"][STATUS_ROUTE]["post"]
    assert set(post["responses"]) == {"202", "400", "401", "403", "404", "413", "503"}
    problem = {"$ref": "#/components/schemas/Problem"}
    for code, answer in post["responses"].items():
        if code != "202":
            assert answer["content"]["application/json"]["schema"] == problem, code
    schema = spec["components"]["schemas"]["Report"]
    assert schema["required"] == ["connected"]
    assert schema["properties"]["reason"]["maxLength"] == 1024
