"""``pods/{name}/log`` against real processes: tail, follow, timestamps, previous, errors."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from modes.sandbox.node.agent import NodeAgent
from modes.sandbox.node.images import ImagePolicy, Launch
from modes.sandbox.node.routes import add_routes, status_middleware
from modes.sandbox.node.store import PODS
from tests.sandbox_node.fakes import FakeStore
from tests.sandbox_node.helpers import container_status, make_config, status

Obj = dict[str, Any]
TICKER = ("import sys, time\n"
          "for i in range(int(sys.argv[1])):\n print(f'line {i}'); time.sleep(0.02)")


class TickerImages(ImagePolicy):
    """``test/ticker`` prints ``line 0`` … ``line N-1`` (N from its args) and exits."""

    def launch(self, container: Obj) -> Launch:
        if container.get("image") == "test/ticker":
            return Launch([sys.executable, "-u", "-c", TICKER, *container.get("args", [])],
                          python=False)
        return super().launch(container)


def ticker_pod(name: str, lines: int, policy: str = "Never", extra: list[Obj] | None = None) -> Obj:
    containers = [{"name": "tick", "image": "test/ticker", "args": [str(lines)]}, *(extra or [])]
    return {"metadata": {"name": name, "namespace": "default"},
            "spec": {"restartPolicy": policy, "containers": containers}}


Env = tuple[FakeStore, TestClient]  # type: ignore[type-arg]


@pytest.fixture
async def env(tmp_path: Path, aiohttp_client: Any) -> AsyncIterator[Env]:
    store = FakeStore()
    agent = NodeAgent(make_config(tmp_path, images=TickerImages()))
    await agent.start(store)
    app = web.Application(middlewares=[status_middleware])
    add_routes(app, store, agent)
    client = await aiohttp_client(app)
    try:
        yield store, client
    finally:
        await agent.stop()


def url(pod: str, **query: str) -> str:
    params = "&".join(f"{k}={v}" for k, v in query.items())
    return f"/api/v1/namespaces/default/pods/{pod}/log" + (f"?{params}" if params else "")


async def test_tail_and_timestamps(env: Env) -> None:
    store, client = env
    store.put(PODS, ticker_pod("t", 5))
    await store.wait_for(lambda: status(store, "t").get("phase") == "Succeeded")
    response = await client.get(url("t"))
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    assert await response.text() == "".join(f"line {i}\n" for i in range(5))
    assert await (await client.get(url("t", tailLines="2"))).text() == "line 3\nline 4\n"
    stamped = (await (await client.get(url("t", tailLines="1", timestamps="true"))).text())
    stamp, _, rest = stamped.partition(" ")
    assert rest == "line 4\n"
    assert stamp.endswith("Z")
    assert stamp[4] == "-"
    assert stamp[10] == "T"
    assert await (await client.get(url("t", limitBytes="8"))).text() == "line 0\nl"


async def test_follow_streams_until_the_container_exits(env: Env) -> None:
    store, client = env
    store.put(PODS, ticker_pod("f", 40))
    await store.wait_for(lambda: "running" in container_status(store, "f").get("state", {}))
    response = await client.get(url("f", follow="true"))
    seen = []
    async for raw in response.content:
        seen.append(raw.decode())
        if len(seen) == 1:
            # still running while the first lines arrive: this is a stream, not a snapshot
            assert "running" in container_status(store, "f")["state"]
    assert seen == [f"line {i}\n" for i in range(40)]


async def test_previous_is_the_last_run(env: Env) -> None:
    store, client = env
    store.put(PODS, ticker_pod("p", 2, policy="Always"))
    await store.wait_for(lambda: container_status(store, "p").get("restartCount", 0) >= 1)
    assert await (await client.get(url("p", previous="true"))).text() == "line 0\nline 1\n"


async def test_errors_are_status_bodies(env: Env) -> None:
    store, client = env
    second = {"name": "web", "image": "nginx"}
    store.put(PODS, ticker_pod("two", 1, extra=[second]))
    await store.wait_for(lambda: len(status(store, "two").get("containerStatuses", [])) == 2)
    cases = [
        (url("ghost"), 404, 'pods "ghost" not found'),
        (url("two"), 400, "a container name must be specified for pod two, choose one of: "
                          "[tick web]"),
        (url("two", container="nope"), 400, "container nope is not valid for pod two"),
        (url("two", container="web"), 400,
         'container "web" in pod "two" is waiting to start: ErrImageNeverPull'),
        (url("two", container="tick", previous="true"), 400,
         'previous terminated container "tick" in pod "two" not found'),
        (url("two", container="tick", tailLines="x"), 400,
         "tailLines: invalid value 'x': must be an integer"),
    ]
    for path, code, message in cases:
        response = await client.get(path)
        body = await response.json()
        assert (response.status, body["kind"], body["message"]) == (code, "Status", message)
