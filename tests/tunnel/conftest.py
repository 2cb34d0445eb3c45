"""Two sessions joined back to back, over an in-process pipe (the task-driven path) or a real
socket pair on 127.0.0.1 (the push path): every stream test runs over both."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from kubetunnel.plugins import ByteStream
from kubetunnel.transports.loopback import pipe_pair
from kubetunnel.tunnel.session import Session, SessionOptions
from kubetunnel.tunnel.sockets import SocketStream
from kubetunnel.tunnel.streams import Stream


@dataclass
class Pair:
    cli: Session
    agent: Session
    cli_opened: asyncio.Queue[Stream] = field(default_factory=asyncio.Queue)
    agent_opened: asyncio.Queue[Stream] = field(default_factory=asyncio.Queue)
    statuses: list[tuple[bool, str]] = field(default_factory=list)


async def socket_pair() -> tuple[ByteStream, ByteStream]:
    loop = asyncio.get_running_loop()
    accepted: asyncio.Future[SocketStream] = loop.create_future()

    def factory() -> SocketStream:
        stream = SocketStream()
        accepted.set_result(stream)
        return stream

    server = await loop.create_server(factory, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    _, ours = await loop.create_connection(SocketStream, "127.0.0.1", port)
    theirs = await accepted
    server.close()
    await server.wait_closed()
    return ours, theirs


async def make_pair(kind: str, options: SessionOptions) -> tuple[Pair, list[asyncio.Task[str]]]:
    a, b = pipe_pair(64 * 1024) if kind == "pipe" else await socket_pair()
    pair = Pair.__new__(Pair)  # sessions need the queues first, the pair needs the sessions
    pair.cli_opened, pair.agent_opened, pair.statuses = asyncio.Queue(), asyncio.Queue(), []
    pair.cli = Session(a, initiator=True, peer_window=options.window, options=options,
                       on_open=pair.cli_opened.put_nowait, name="cli")
    pair.agent = Session(b, initiator=False, peer_window=options.window, options=options,
                         on_open=pair.agent_opened.put_nowait,
                         on_status=lambda up, why: pair.statuses.append((up, why)), name="agent")
    tasks = [asyncio.create_task(pair.cli.run()), asyncio.create_task(pair.agent.run())]
    return pair, tasks


@pytest.fixture(params=["pipe", "socket"])
async def pair(request: pytest.FixtureRequest) -> AsyncIterator[Pair]:
    options = SessionOptions(window=16 * 1024, frame_size=4096, high_water=32 * 1024)
    made, tasks = await make_pair(request.param, options)
    yield made
    await made.cli.aclose("test over")
    await made.agent.aclose("test over")
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
