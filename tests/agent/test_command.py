"""``kubetunnel agent``: flags, their KUBETUNNEL_* fallbacks, one-line errors, a real process."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from kubetunnel import logging as kt_logging
from kubetunnel.plugins import TransportSettings, TunnelTarget
from kubetunnel.transports.direct import DirectTransport
from kubetunnel.tunnel.client import Route, TunnelClient
from modes.main import main

from .conftest import FAST


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    # main() points structlog at this test's captured stderr; later tests must not inherit it.
    yield
    kt_logging._configured = None
    structlog.reset_defaults()


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as info:
        main(argv)
    return int(info.value.code or 0), capsys.readouterr().err


def test_missing_token_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run(["agent", "--port", "8080", "--health-port", "8081",
                      "--token-file", str(tmp_path / "nope")], capsys)
    assert code == 2
    assert err.count("\n") == 1
    assert "cannot read the token file" in err
    assert "Traceback" not in err


def test_empty_token_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    token = tmp_path / "token"
    token.write_text("\n")
    code, err = _run(["agent", "--port", "8080", "--health-port", "8081",
                      "--token-file", str(token)], capsys)
    assert code == 2
    assert "is empty" in err


def test_ports_are_required_and_distinct(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                         ) -> None:
    token = tmp_path / "token"
    token.write_text("t")
    code, err = _run(["agent", "--token-file", str(token)], capsys)
    assert (code, "at least one --port" in err) == (2, True)
    code, err = _run(["agent", "--token-file", str(token), "-p", "7000"], capsys)
    assert (code, "must all differ" in err) == (2, True)
    code, err = _run(["agent", "--token-file", str(token), "-p", "70000"], capsys)
    assert code == 2
    assert err.count("\n") == 1


def test_a_port_in_use_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    token = tmp_path / "token"
    token.write_text("t")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, err = _run(["agent", "--token-file", str(token), "--bind-address", "127.0.0.1",
                          "-p", str(port), "--tunnel-port", "0", "--health-port", "0"], capsys)
    assert code == 1
    assert err.startswith("kubetunnel: error: cannot listen on 127.0.0.1")
    assert err.count("\n") == 1


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("event_loop", ["asyncio", "uvloop"])
def test_agent_process_from_environment(tmp_path: Path, event_loop: str) -> None:
    """The real command, configured only through KUBETUNNEL_* variables, serves a tunnel and
    stops cleanly on SIGTERM, on either event loop."""
    token = tmp_path / "token"
    token.write_text("env-token\n")
    tunnel, health, service_a, service_b = (_free_port() for _ in range(4))
    env = {**os.environ, "KUBETUNNEL_TUNNEL_PORT": str(tunnel),
           "KUBETUNNEL_HEALTH_PORT": str(health),
           "KUBETUNNEL_PORTS": f"{service_a} {service_b}",
           "KUBETUNNEL_TOKEN_FILE": str(token), "KUBETUNNEL_BIND_ADDRESS": "127.0.0.1",
           "KUBETUNNEL_EVENT_LOOP": event_loop}
    proc = subprocess.Popen([sys.executable, "-m", "modes", "agent", "--log-format", "json"],
                            env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", tunnel), 0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        asyncio.run(_use_agent(tunnel, service_b))
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "env-token" not in err  # the token never reaches a log line
    assert '"event": "tunnel.attached"' in err


async def _use_agent(tunnel: int, service: int) -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.read(100))
        writer.close()

    local = await asyncio.start_server(echo, "127.0.0.1", 0)
    route = Route(service, local.sockets[0].getsockname()[1])
    client = TunnelClient(DirectTransport(TransportSettings()),
                          TunnelTarget("test", address=f"127.0.0.1:{tunnel}"), "env-token",
                          [route], options=FAST)
    async with client:
        await client.wait_connected(5)
        reader, writer = await asyncio.open_connection("127.0.0.1", service)
        writer.write(b"through a real agent")
        assert await reader.read() == b"through a real agent"
        writer.close()
    local.close()
    await local.wait_closed()
