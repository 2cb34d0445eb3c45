"""The agent's reporter: the latest state reaches the operator, through refusals and outages,
and a newer state supersedes one still being retried."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from kubetunnel.reporting import StatusReporter


class FakeOperator:
    """An HTTP server speaking the operator's report endpoint, failing on demand."""

    def __init__(self) -> None:
        self.received: list[tuple[str, str, dict[str, Any]]] = []
        self.fail_next = 0
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        if self.fail_next:
            self.fail_next -= 1
            return web.json_response({"status": 503, "message": "not the leader"}, status=503)
        self.received.append((request.path, request.headers["Authorization"], body))
        return web.json_response({"connected": body["connected"]}, status=202)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/namespaces/{ns}/tunnels/{name}/status", self.handle)
        self.runner = web.AppRunner(app, handle_signals=False)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"


@pytest.fixture
async def fake() -> AsyncIterator[FakeOperator]:
    server = FakeOperator()
    await server.start()
    yield server
    assert server.runner is not None
    await server.runner.cleanup()


async def test_reports_reach_the_operator_with_the_token(fake: FakeOperator) -> None:
    reporter = StatusReporter(fake.url + "/", "shop", "orders", b"s3cret\n")
    try:
        await reporter(True, "tunnel up")
        await asyncio.wait_for(reporter.wait_delivered(), 5)
    finally:
        await reporter.aclose()
    assert fake.received == [("/v1/namespaces/shop/tunnels/orders/status", "Bearer s3cret",
                              {"connected": True, "reason": "tunnel up"})]
    assert "s3cret" not in repr(reporter)


async def test_refusals_are_retried_and_the_latest_state_wins(fake: FakeOperator) -> None:
    fake.fail_next = 3
    reporter = StatusReporter(fake.url, "shop", "orders", "t", backoff_start=0.02,
                              backoff_cap=0.05)
    try:
        await reporter(True, "up")
        await reporter(False, "local process stopped")
        await asyncio.wait_for(reporter.wait_delivered(), 5)
    finally:
        await reporter.aclose()
    assert fake.received[-1][2] == {"connected": False, "reason": "local process stopped"}
    assert all(body["connected"] is False for _, _, body in fake.received)


async def test_an_unreachable_operator_is_retried_until_it_answers(fake: FakeOperator) -> None:
    assert fake.runner is not None
    port = fake.runner.addresses[0][1]
    await fake.runner.cleanup()
    reporter = StatusReporter(f"http://127.0.0.1:{port}", "shop", "orders", "t",
                              backoff_start=0.02, backoff_cap=0.05, resend_interval=0.2)
    try:
        await reporter(True, "up")
        await asyncio.sleep(0.2)
        assert not fake.received
        fake.runner = web.AppRunner(fake.runner.app, handle_signals=False)
        await fake.runner.setup()
        await web.TCPSite(fake.runner, "127.0.0.1", port).start()
        await asyncio.wait_for(reporter.wait_delivered(), 5)
        # The same state is repeated after the resend interval (for a restarted operator).
        await asyncio.sleep(0.5)
    finally:
        await reporter.aclose()
    assert len(fake.received) >= 2
    assert {body["connected"] for _, _, body in fake.received} == {True}
