"""The handshake: version negotiation, the token check, refusals, and garbage before a session."""

from __future__ import annotations

import asyncio
import hmac
import json

import pytest

from kubetunnel.transports.loopback import pipe_pair
from kubetunnel.tunnel import framing, handshake
from kubetunnel.tunnel.framing import MAGIC, FrameType, ProtocolError
from kubetunnel.tunnel.handshake import Hello, TunnelRefused, client_handshake, server_handshake

TOKEN = b"tunnel-token"


def _admit_all(hello: Hello) -> str | None:
    return None


async def _both(hello: Hello, admit: handshake.Admit = _admit_all) -> tuple[object, object]:
    cli, agent = pipe_pair()
    results = await asyncio.gather(
        client_handshake(cli, hello, 2),
        server_handshake(agent, TOKEN, admit, 4096, 2, agent="pod-1"),
        return_exceptions=True,
    )
    await cli.aclose()
    await agent.aclose()
    return results[0], results[1]


async def test_highest_common_version_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(handshake, "VERSIONS", (1, 2, 3))
    cli, agent = await _both(Hello((1, 2, 5), TOKEN.decode(), "me@host", 8192))
    assert isinstance(cli, handshake.Opened)
    assert (cli.version, cli.peer_window) == (2, 4096)
    assert isinstance(agent, tuple)
    assert agent[0].client == "me@host"
    assert agent[1].peer_window == 8192


async def test_no_common_version_is_refused_with_both_lists() -> None:
    cli, agent = await _both(Hello((7, 8), TOKEN.decode()))
    assert isinstance(cli, TunnelRefused)
    assert cli.code == "version"
    assert "agent speaks [1], CLI [7, 8]" in cli.reason
    assert isinstance(agent, TunnelRefused)


async def test_wrong_token_is_refused_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(handshake.hmac, "compare_digest", spy)
    cli, _ = await _both(Hello((1,), "guess"))
    assert isinstance(cli, TunnelRefused)
    assert cli.code == "unauthorized"
    assert calls == [(b"guess", TOKEN)]


async def test_token_is_checked_before_busy() -> None:
    cli, _ = await _both(Hello((1,), "guess"), admit=lambda hello: "busy")
    assert isinstance(cli, TunnelRefused)
    assert cli.code == "unauthorized"  # an outsider does not learn that someone is connected


async def test_busy_refusal_carries_the_reason() -> None:
    cli, _ = await _both(Hello((1,), TOKEN.decode()), admit=lambda hello: "held by a@b")
    assert isinstance(cli, TunnelRefused)
    assert (cli.code, cli.reason) == ("busy", "held by a@b")
    assert "held by a@b" in str(cli)


def test_hello_repr_hides_the_token() -> None:
    assert "sekrit" not in repr(Hello((1,), "sekrit", "me"))


async def _serve_raw(data: bytes) -> BaseException | object:
    cli, agent = pipe_pair()
    await cli.send(data)
    await cli.send_eof()
    try:
        return await server_handshake(agent, TOKEN, _admit_all, 4096, 2)
    except (ProtocolError, TunnelRefused) as exc:
        return exc
    finally:
        await cli.aclose()
        await agent.aclose()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"GET / HTTP/1.1\r\n\r\n", "bad preface"),
        (MAGIC + framing.header(FrameType.HELLO, 0, 0, 1 << 20), "does not speak"),
        (MAGIC + framing.encode(FrameType.HELLO, 0, 0, b"{not json"), "not JSON"),
        (MAGIC + framing.encode(FrameType.DATA, 0, 1, b"x"), "does not speak"),
        (MAGIC + framing.encode(FrameType.HELLO, 0, 0, b"[1]"), "not a JSON object"),
        (MAGIC[:4], "closed the connection"),
    ],
)
async def test_garbage_before_the_session(data: bytes, message: str) -> None:
    result = await _serve_raw(data)
    assert isinstance(result, ProtocolError)
    assert message in str(result)


async def test_hello_without_token_is_refused_as_malformed() -> None:
    body = json.dumps({"versions": [1], "window": 4096}).encode()
    result = await _serve_raw(MAGIC + framing.encode(FrameType.HELLO, 0, 0, body))
    assert isinstance(result, TunnelRefused)
    assert result.code == "malformed"


async def test_frames_right_after_welcome_reach_the_session() -> None:
    cli, agent = pipe_pair()
    welcome = framing.encode(FrameType.WELCOME, 0, 0, b'{"version": 1, "window": 4096}')
    ping = framing.encode(FrameType.PING, 0, 0, b"12345678")
    await agent.send(welcome + ping)
    opened = await client_handshake(cli, Hello((1,), "t"), 2)
    assert opened.leftover == ping
    await cli.aclose()
    await agent.aclose()


async def test_silent_peer_times_out() -> None:
    cli, agent = pipe_pair()
    with pytest.raises(TimeoutError):
        await server_handshake(agent, TOKEN, _admit_all, 4096, 0.1)
    await cli.aclose()
    await agent.aclose()
