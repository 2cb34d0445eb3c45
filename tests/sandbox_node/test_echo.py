"""The echo workload's contract: any request -> 200 and the pod name as plain text."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import aiohttp
from click.testing import CliRunner

from modes.sandbox.node.command import echo

ADDRESS = "127.77.4.1"


async def _start(env: dict[str, str]) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "modes.sandbox.node.echo",
        env={"PATH": os.environ.get("PATH", ""), "KUBETUNNEL_BIND_ADDRESS": ADDRESS, **env},
        stderr=asyncio.subprocess.PIPE, start_new_session=True)
    assert process.stderr is not None
    async with asyncio.timeout(10):
        while b"echo.serving" not in await process.stderr.readline():
            pass
    return process


async def test_answers_every_request_with_the_pod_name() -> None:
    process = await _start({"POD_NAME": "web-7d9f", "PORT": "18090", "HOSTNAME": "other"})
    try:
        async with aiohttp.ClientSession() as session:
            for method, path in [("GET", "/"), ("POST", "/x/y?z=1"), ("DELETE", "/healthz")]:
                async with session.request(method, f"http://{ADDRESS}:18090{path}",
                                           data=b"ignored") as response:
                    assert response.status == 200
                    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
                    assert await response.read() == b"web-7d9f"
    finally:
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 5) == 0  # SIGTERM is a clean stop


async def test_defaults_to_hostname_and_port_8080() -> None:
    process = await _start({"HOSTNAME": "pod-from-hostname"})
    try:
        async with aiohttp.ClientSession() as session, session.get(
                f"http://{ADDRESS}:8080/") as response:
            assert await response.read() == b"pod-from-hostname"
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 5)


def test_echo_command_is_hidden_and_documents_its_contract() -> None:
    assert echo.hidden
    result = CliRunner().invoke(echo, ["--help"])
    assert result.exit_code == 0
    assert "pod's name" in result.output
