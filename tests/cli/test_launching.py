"""The ``-- COMMAND`` part of ``connect``'s command line, and exit codes as a shell reports them."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from modes.cli.launching import CommandAfterDashes, command_after_dashes, exit_status


@click.command(cls=CommandAfterDashes)
@click.argument("service")
@click.option("-p", "ports", multiple=True)
def probe(service: str, ports: tuple[str, ...]) -> None:
    click.echo(repr((service, ports, command_after_dashes())))


@pytest.mark.parametrize(("args", "shown"), [
    (["orders", "-p", "1:80"], "('orders', ('1:80',), ())"),
    (["orders", "-p", "1:80", "--", "python", "app.py", "--debug", "-p", "x"],
     "('orders', ('1:80',), ('python', 'app.py', '--debug', '-p', 'x'))"),
    (["orders", "--", "sh", "-c", "a -- b"], "('orders', (), ('sh', '-c', 'a -- b'))"),
])
def test_everything_after_dashes_is_the_command(args: list[str], shown: str) -> None:
    result = CliRunner().invoke(probe, args)
    assert result.exit_code == 0, result.output
    assert result.output.strip() == shown


def test_dashes_without_a_command_and_extra_arguments_are_usage_errors() -> None:
    empty = CliRunner().invoke(probe, ["orders", "--"])
    assert empty.exit_code == 2
    assert "nothing after '--'" in empty.output
    extra = CliRunner().invoke(probe, ["orders", "python"])  # forgot the '--'
    assert extra.exit_code == 2
    assert "unexpected extra argument" in extra.output.lower()


def test_usage_line_shows_the_command() -> None:
    assert "SERVICE [-- COMMAND [ARGS]...]" in CliRunner().invoke(probe, ["--help"]).output


@pytest.mark.parametrize(("returncode", "status"), [(0, 0), (7, 7), (-2, 130), (-15, 143)])
def test_exit_status_as_a_shell_reports_it(returncode: int, status: int) -> None:
    assert exit_status(returncode) == status
