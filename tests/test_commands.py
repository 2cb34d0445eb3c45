"""The root command: every command has help, errors are one line with the right exit code."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from kubetunnel.console import PluginChoice
from modes.main import root


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modes", *args],
        capture_output=True, text=True, timeout=60, check=False,
    )


def _walk(command: click.Command, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [path]
    if isinstance(command, click.Group):
        ctx = click.Context(command)
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            assert sub is not None, name
            found += _walk(sub, (*path, name))
    return found


@pytest.mark.parametrize("path", _walk(root), ids=lambda p: " ".join(p) or "kubetunnel")
def test_every_command_has_help(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(root, [*path, "--help"], prog_name="kubetunnel")
    assert result.exit_code == 0, result.output
    assert "Usage: kubetunnel" in result.output


def test_root_help_imports_neither_aiohttp_nor_kubernetes() -> None:
    code = (
        "import sys\n"
        "from modes.main import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('aiohttp', 'kubernetes', 'structlog') if m in sys.modules]\n"
        "print('HEAVY=' + ','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "HEAVY="


def test_unknown_subcommand_is_one_line_and_exit_2() -> None:
    result = _run("frobnicate")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "kubetunnel: error: No such command 'frobnicate'. (see 'kubetunnel --help')"
    )


def test_unknown_option_value_is_one_line_and_exit_2() -> None:
    result = _run("plugins", "--kind", "gadget")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "'gadget' is not one of" in result.stderr


def test_unknown_plugin_name_is_one_line_and_exit_2() -> None:
    result = _run("plugins", "show", "transport", "carrier-pigeon")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "unknown transport plugin 'carrier-pigeon'" in lines[0]
    assert "loopback" in lines[0]


def test_plugin_choice_option_rejects_unknown_names() -> None:
    @click.command()
    @click.option("--transport", type=PluginChoice("transport"), default="loopback")
    def cmd(transport: str) -> None:
        click.echo(f"chose {transport}")

    runner = CliRunner()
    ok = runner.invoke(cmd, ["--transport", "loopback"])
    assert ok.exit_code == 0
    assert ok.output == "chose loopback\n"
    bad = runner.invoke(cmd, ["--transport", "smoke-signals"])
    assert bad.exit_code == 2
    assert "unknown transport plugin 'smoke-signals'" in bad.output


def test_plugins_table_and_json_agree() -> None:
    table = _run("plugins")
    as_json = _run("plugins", "-o", "json")
    assert table.returncode == as_json.returncode == 0
    rows = json.loads(as_json.stdout)
    assert {"kind": "transport", "name": "loopback", "distribution": "kubetunnel",
            "module": "kubetunnel.transports.loopback"} in rows
    assert {"kind": "store", "name": "memory", "distribution": "kubetunnel",
            "module": "kubetunnel.stores.memory"} in rows
    header, *lines = table.stdout.splitlines()
    assert header.split() == ["KIND", "NAME", "DISTRIBUTION", "MODULE"]
    assert len(lines) == len(rows)


def test_version_matches_distribution_metadata() -> None:
    from importlib import metadata

    result = _run("version", "-o", "json")
    assert result.returncode == 0
    assert json.loads(result.stdout)["version"] == metadata.version("kubetunnel")


def test_completion_script_for_bash() -> None:
    result = _run("completion", "bash")
    assert result.returncode == 0
    assert "_KUBETUNNEL_COMPLETE" in result.stdout


def test_log_format_json_on_any_command() -> None:
    env = {**os.environ}
    code = (
        "import click\nfrom kubetunnel.console import common_options\n"
        "from kubetunnel.logging import get_logger\n"
        "@click.command()\n@common_options\ndef cmd():\n"
        "    get_logger('t').warning('probe.event', answer=42)\n"
        "    get_logger('t').debug('hidden.event')\n"
        "cmd(['--log-format', 'json', '--log-level', 'warning'])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    events = [json.loads(line) for line in out.stderr.splitlines() if line.startswith("{")]
    assert [e["event"] for e in events] == ["probe.event"]
    assert events[0]["answer"] == 42
    assert events[0]["level"] == "warning"


@pytest.mark.parametrize("command", [("agent", "--port", "8080"), ("cli", "forward"),
                                     ("cli", "connect", "orders", "-p", "8080:80")])
def test_relaying_commands_run_on_the_chosen_event_loop(command: tuple[str, ...]) -> None:
    # The kubeconfig (or token file) is missing, so each command stops right after choosing.
    missing = ("--kubeconfig", "/nonexistent/kubeconfig") if command[0] == "cli" else (
        "--token-file", "/nonexistent/token")
    for choice, expected in (("uvloop", "uvloop"), ("asyncio", "asyncio")):
        result = _run("--log-level", "debug", "--log-format", "json", *command, *missing,
                      "--event-loop", choice)
        assert result.returncode != 0
        events = [json.loads(line) for line in result.stderr.splitlines()
                  if line.startswith("{")]
        assert {"event": "event_loop", "loop": expected} in [
            {k: e.get(k) for k in ("event", "loop")} for e in events], result.stderr


def test_event_loop_errors_are_one_line() -> None:
    result = _run("cli", "forward", "--event-loop", "trio")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "'trio' is not one of" in result.stderr
    code = ("import sys\nsys.modules['uvloop'] = None\nfrom modes.main import main\n"
            "main(['agent', '--port', '8080', '--event-loop', 'uvloop'])\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "kubetunnel: error: Invalid value for '--event-loop': uvloop is not installed "
        "(use auto or asyncio) (see 'kubetunnel agent --help')"]


def _command(path: tuple[str, ...]) -> click.Command:
    command: click.Command = root
    for name in path:
        assert isinstance(command, click.Group)
        sub = command.get_command(click.Context(command), name)
        assert sub is not None, name
        command = sub
    return command


@pytest.mark.parametrize("path", _walk(root), ids=lambda p: " ".join(p) or "kubetunnel")
def test_every_option_has_help_text(path: tuple[str, ...]) -> None:
    command = _command(path)
    bare = [param.opts[-1] for param in command.params
            if isinstance(param, click.Option) and not param.hidden and not param.help]
    assert bare == [], f"options without help: {bare}"


@pytest.mark.parametrize("path", [p for p in _walk(root) if p[:1] == ("cli",)],
                         ids=lambda p: " ".join(p))
def test_cli_commands_state_the_default_log_level_they_use(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(root, [*path, "--help"], prog_name="kubetunnel")
    assert result.exit_code == 0, result.output
    assert "(default: warning)" in " ".join(result.output.split())


def test_agent_states_info_as_its_default_log_level() -> None:
    result = CliRunner().invoke(root, ["agent", "--help"], prog_name="kubetunnel")
    assert "(default: info)" in " ".join(result.output.split())


@pytest.mark.parametrize(("args", "shown"), [
    (("cli", "probe"), ["warning.event"]),
    (("cli", "probe", "--log-level", "info"), ["info.event", "warning.event"]),
    (("--log-level", "info", "cli", "probe"), ["info.event", "warning.event"]),
    (("probe",), ["info.event", "warning.event"]),
])
def test_the_default_log_level_is_the_one_the_help_states(
    args: tuple[str, ...], shown: list[str]
) -> None:
    # A throwaway command under the real groups, so the groups' own defaults are what is tested.
    code = (
        "import click\n"
        "from kubetunnel.console import cli_options, common_options\n"
        "from kubetunnel.logging import get_logger\n"
        "from modes.cli.command import cli\n"
        "from modes.main import root\n"
        "def probe():\n"
        "    get_logger('t').info('info.event')\n"
        "    get_logger('t').warning('warning.event')\n"
        "cli.add_command(click.command('probe')(cli_options(probe)))\n"
        "root.add_command(click.command('probe')(common_options(probe)))\n"
        f"root.main({list(('--log-format', 'json', *args))!r}, standalone_mode=False)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    events = [json.loads(line)["event"] for line in out.stderr.splitlines()
              if line.startswith("{")]
    assert events == shown, out.stderr
