"""Who may attach, what happens without a CLI, reconnects, the operator seam, outbound streams."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace

import aiohttp
import pytest

from kubetunnel.errors import UsageError
from kubetunnel.tunnel.framing import ErrorCode
from kubetunnel.tunnel.handshake import TunnelRefused
from modes.agent.health import start_health

from .conftest import FAST, Stack


async def _expect_reset(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(reader.read(100), 2)
    finally:
        writer.close()


async def _echo_once(port: int, message: bytes = b"hello") -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(message)
    answer = await asyncio.wait_for(reader.readexactly(len(message)), 5)
    writer.close()
    await writer.wait_closed()
    return answer


async def test_service_ports_reset_while_no_cli_is_attached(stack: Stack) -> None:
    await _expect_reset(stack.port("echo"))
    await stack.connected_client()
    assert await _echo_once(stack.port("echo")) == b"hello"


async def test_wrong_token_is_refused(stack: Stack) -> None:
    client = stack.client(token="not-the-token")
    client.start()
    with pytest.raises(TunnelRefused, match="wrong tunnel token") as info:
        await client.wait_connected(5)
    assert info.value.code == "unauthorized"
    assert stack.agent.session is None
    assert await client.wait_failed() is info.value


async def test_a_second_cli_is_refused_with_a_reason(stack: Stack) -> None:
    await stack.connected_client()
    second = stack.client(client_id="other@desk")
    second.start()
    with pytest.raises(TunnelRefused, match=r"another CLI \(dev@laptop\)") as info:
        await second.wait_connected(5)
    assert info.value.code == "busy"
    assert await _echo_once(stack.port("echo")) == b"hello"  # the first one is unharmed


async def test_tunnel_drop_resets_streams_and_reconnects(stack: Stack) -> None:
    events: list[tuple[bool, str]] = []
    client = stack.client(on_connection=lambda up, reason: events.append((up, reason)))
    client.start()
    await client.wait_connected(5)
    reader, writer = await asyncio.open_connection("127.0.0.1", stack.port("echo"))
    writer.write(b"before")
    assert await reader.readexactly(6) == b"before"
    session = stack.agent.session
    assert session is not None
    await session._transport.aclose()  # the connection dies under the session
    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(reader.read(100), 5)
    writer.close()
    for _ in range(200):
        if client.connects == 2 and client.connected and stack.agent.session is not None:
            break
        await asyncio.sleep(0.02)
    assert client.connects == 2
    assert await _echo_once(stack.port("echo"), b"after") == b"after"
    assert [up for up, _ in events] == [True, False, True]
    assert "closed" in events[1][1] or "lost" in events[1][1]


async def test_status_seam_follows_tunnel_and_local_process(stack: Stack) -> None:
    async def until(state: bool) -> None:
        for _ in range(200):
            if stack.statuses and stack.statuses[-1][0] is state:
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"status never became {state}: {stack.statuses}")

    await until(False)
    assert stack.statuses[0] == (False, "no CLI attached")
    client = await stack.connected_client()
    await until(True)
    assert "answers on" in stack.statuses[-1][1]
    # The local process stops answering on one port: the agent hears it from the CLI's probe.
    stack.servers["echo"].close()
    await stack.servers["echo"].wait_closed()
    await until(False)
    assert "nothing answers" in stack.statuses[-1][1]
    await client.aclose()
    await asyncio.sleep(0.1)
    assert stack.agent.state() == (False, "no CLI attached")


async def test_a_refused_local_dial_is_reported_without_waiting_for_the_probe(
    stack: Stack,
) -> None:
    # Probing every 10 s: only the refused dial can explain a report within the test's time.
    client = stack.client(options=replace(FAST, probe_interval=10.0))
    client.start()
    await client.wait_connected(5)
    for _ in range(100):
        if stack.statuses and stack.statuses[-1][0]:
            break
        await asyncio.sleep(0.02)
    assert stack.statuses[-1][0] is True
    stack.servers["echo"].close()
    await stack.servers["echo"].wait_closed()
    await asyncio.sleep(0.1)
    assert stack.statuses[-1][0] is True  # nobody has noticed yet
    with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
        reader, writer = await asyncio.open_connection("127.0.0.1", stack.port("echo"))
        writer.write(b"ping")
        await reader.read()  # reset: the local process is gone
        writer.close()
    for _ in range(100):
        if not stack.statuses[-1][0]:
            break
        await asyncio.sleep(0.02)
    assert stack.statuses[-1][0] is False
    assert "nothing answers" in stack.statuses[-1][1]


async def test_a_stopping_agent_reports_down(stack: Stack) -> None:
    await stack.connected_client()
    for _ in range(200):
        if stack.statuses and stack.statuses[-1][0]:
            break
        await asyncio.sleep(0.02)
    assert stack.statuses[-1][0] is True
    await stack.agent.aclose(grace=1)
    assert stack.statuses[-1][0] is False


async def test_outbound_streams_are_dialled_by_the_agent(stack: Stack) -> None:
    client = await stack.connected_client()
    stream = await client.open_stream(f"127.0.0.1:{stack.local_port('echo')}")
    await stream.send(b"from the laptop")
    await stream.send_eof()
    received = b""
    while chunk := await stream.receive():
        received += chunk
    assert received == b"from the laptop"


async def test_outbound_to_a_closed_port_is_reset_with_the_reason(stack: Stack) -> None:
    client = await stack.connected_client()
    stream = await client.open_stream("127.0.0.1:1")
    with pytest.raises(ConnectionResetError, match=r"cannot connect to 127\.0\.0\.1:1"):
        await asyncio.wait_for(stream.receive(), 5)
    assert stream.reset_code == ErrorCode.CONNECT_FAILED


async def test_a_bad_target_is_a_usage_error_not_a_broken_tunnel(stack: Stack) -> None:
    client = await stack.connected_client()
    with pytest.raises(UsageError, match="not host:port"):
        await client.open_stream("no-port-here")
    with pytest.raises(UsageError, match="not host:port"):
        await client.forward("db:99999")
    assert client.connected


async def test_forward_listener_carries_local_connections(stack: Stack) -> None:
    client = await stack.connected_client()
    server = await client.forward(f"127.0.0.1:{stack.local_port('echo')}")
    port = server.sockets[0].getsockname()[1]
    assert await _echo_once(port, b"via forward") == b"via forward"


async def test_graceful_disconnect_lets_open_streams_finish(stack: Stack) -> None:
    client = await stack.connected_client()
    reader, writer = await asyncio.open_connection("127.0.0.1", stack.port("echo"))
    writer.write(b"first")
    assert await reader.readexactly(5) == b"first"
    closing = asyncio.create_task(client.aclose(grace=5))
    await asyncio.sleep(0.05)
    writer.write(b"second")  # the stream survives the GOAWAY
    assert await reader.readexactly(6) == b"second"
    writer.write_eof()
    assert await reader.read() == b""
    await asyncio.wait_for(closing, 5)
    writer.close()
    await _expect_reset(stack.port("echo"))


async def test_health_endpoints(stack: Stack) -> None:
    runner, port = await start_health(stack.agent, "127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
                assert response.status == 200
            async with http.get(f"http://127.0.0.1:{port}/readyz") as response:
                assert response.status == 200
                assert (await response.json())["tunnel"] is False
            await stack.connected_client()
            async with http.get(f"http://127.0.0.1:{port}/readyz") as response:
                assert (await response.json())["tunnel"] is True
            stack.agent.ready = False
            async with http.get(f"http://127.0.0.1:{port}/readyz") as response:
                assert response.status == 503
    finally:
        await runner.cleanup()


async def test_garbage_on_the_tunnel_port_is_dropped(direct_stack: Stack) -> None:
    assert direct_stack.agent.tunnel_address is not None
    host, port = direct_stack.agent.tunnel_address
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    await direct_stack.connected_client()  # the agent is still fine
