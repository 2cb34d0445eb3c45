"""The ``direct`` transport: addresses, refusals, TCP_NODELAY, and TLS against a CA bundle."""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from kubetunnel.errors import KubetunnelError, UsageError
from kubetunnel.plugins import ByteStream, TransportSettings, TunnelTarget
from kubetunnel.registry import get_registry
from kubetunnel.transports.direct import DirectTransport, parse_address


def test_registered_as_entry_point() -> None:
    assert get_registry().load("transport", "direct") is DirectTransport


@pytest.mark.parametrize("bad", ["nohost", "host:", ":80", "host:0", "host:65536", "host:x"])
def test_bad_addresses(bad: str) -> None:
    with pytest.raises(UsageError, match="not host:port"):
        parse_address(bad)


def test_ipv6_address() -> None:
    assert parse_address("[::1]:7000") == ("::1", 7000)


async def test_unreachable_agent_is_one_clear_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, never listening: refused
        transport = DirectTransport(TransportSettings())
        with pytest.raises(KubetunnelError, match=f"cannot reach the agent at 127.0.0.1:{port}"):
            await transport.connect(TunnelTarget("ns", address=f"127.0.0.1:{port}"))


async def test_missing_address_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="needs an address"):
        await DirectTransport(TransportSettings()).connect(TunnelTarget("ns", pod="p"))


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


async def _round_trip(stream: ByteStream) -> bytes:
    await stream.send(b"x" * 300_000)
    got = b""
    while len(got) < 300_000:
        got += await stream.receive()
    await stream.aclose()
    return got


async def test_plain_tcp_round_trip_with_nodelay() -> None:
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    stream = await DirectTransport(TransportSettings()).connect(
        TunnelTarget("ns", address=f"127.0.0.1:{port}")
    )
    sock = stream.get_extra_info("socket")  # type: ignore[attr-defined]
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    assert await _round_trip(stream) == b"x" * 300_000
    server.close()
    await server.wait_closed()


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A throw-away CA, a server certificate for 127.0.0.1 signed by it, and an unrelated CA."""
    d = tmp_path_factory.mktemp("tls")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run = lambda *args: subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)  # noqa: E731
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "1",
        "-subj", "/CN=kubetunnel-test-ca")
    run("req", "-x509", *ec, "-keyout", "other.key", "-out", "other.pem", "-days", "1",
        "-subj", "/CN=other-ca")
    run("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.pem", "-days", "1", "-extfile", "san.ext")
    return {name: d / f"{name}.pem" for name in ("ca", "other", "server")} | {
        "key": d / "server.key"}


@pytest.fixture
def server_context(certificates: dict[str, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificates["server"], certificates["key"])
    return context


@pytest.fixture
async def tls_port(server_context: ssl.SSLContext) -> AsyncIterator[int]:
    server = await asyncio.start_server(_echo, "127.0.0.1", 0, ssl=server_context)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


async def test_tls_with_the_right_ca(tls_port: int, certificates: dict[str, Path]) -> None:
    transport = DirectTransport(TransportSettings(tls_ca=str(certificates["ca"])))
    stream = await transport.connect(TunnelTarget("ns", address=f"127.0.0.1:{tls_port}"))
    assert await _round_trip(stream) == b"x" * 300_000


async def test_tls_with_the_wrong_ca_is_refused(tls_port: int,
                                                certificates: dict[str, Path]) -> None:
    transport = DirectTransport(TransportSettings(tls_ca=str(certificates["other"])))
    with pytest.raises(KubetunnelError, match=r"TLS with the agent .* failed"):
        await transport.connect(TunnelTarget("ns", address=f"127.0.0.1:{tls_port}"))


async def test_unreadable_ca_bundle(tmp_path: Path) -> None:
    transport = DirectTransport(TransportSettings(tls_ca=str(tmp_path / "missing.pem")))
    with pytest.raises(UsageError, match="cannot load TLS CA bundle"):
        await transport.connect(TunnelTarget("ns", address="127.0.0.1:1"))
