"""The commands shown in README.md and docs/ keep working, so the docs cannot rot.

How a Markdown file tags its commands:

- a ```` ```console ```` block is *run*: every line ``$ kubetunnel ...`` is executed (as
  ``python -m modes ...``, against a sandbox API server with the operator's objects installed,
  through ``KUBECONFIG``) and must exit 0. The lines after a command, up to the next ``$``, are
  its expected stdout: ``...`` alone on a line stands for any number of lines, ``...`` inside a
  line for any text. A command shown without output is only checked for its exit code. Console
  blocks hold nothing but ``kubetunnel`` commands and must not change the sandbox in a way a
  later block would notice (they run in document order, against one sandbox).
- a ```` ```sh ```` block is for a real cluster and is *not* run; each of its ``kubetunnel ...``
  commands (up to a pipe or ``&&``) must still parse: the subcommands and options exist and the
  arguments convert, so a renamed flag breaks the test, not the reader.
- other blocks (``bash``, ``yaml``, ``mermaid``, ...) are not looked at; the README's quick-start
  ``bash`` blocks are run by CI itself.

docs/network.md has its own, stricter test (tests/policies/test_docs.py: output compared byte for
byte), so it is left out here.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from modes.main import root
from modes.sandbox.testing import RunningSandbox, running_sandbox

ROOT = Path(__file__).resolve().parents[1]
EXCLUDED = {
    "docs/network.md": "tests/policies/test_docs.py runs its examples",
}
REQUIRED = (
    "kubetunnel --help",
    "kubetunnel version",
    "kubetunnel plugins",
    "kubetunnel cli policy render",
    "kubetunnel cli install --dry-run",
    "kubetunnel cli status",
)
SHELL_OPERATORS = {"|", "||", "&&", ";", ">", ">>", "<", "&"}


def documents() -> list[Path]:
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    return [f for f in files if str(f.relative_to(ROOT)) not in EXCLUDED]


def blocks(path: Path, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```$", path.read_text(), flags=re.S | re.M)


def console_sessions() -> list[tuple[str, str, str]]:
    """(document, command, expected output) for every ``$`` line of every console block."""
    found = []
    for doc in documents():
        for block in blocks(doc, "console"):
            parts = re.split(r"^\$ (.*)\n", block, flags=re.M)
            assert parts[0] == "", f"{doc.name}: a console block must start with '$ ': {block!r}"
            for command, output in zip(parts[1::2], parts[2::2], strict=True):
                found.append((str(doc.relative_to(ROOT)), command, output))
    return found


def shell_commands() -> list[tuple[str, str]]:
    """(document, command) for every ``kubetunnel`` command in an sh block."""
    found = []
    for doc in documents():
        for block in blocks(doc, "sh"):
            for line in block.replace("\\\n", " ").splitlines():
                if re.match(r"(sudo )?kubetunnel\b", line.strip()):
                    found.append((str(doc.relative_to(ROOT)), line.strip()))
    return found


def expected_pattern(expected: str) -> re.Pattern[str]:
    lines = []
    for line in expected.splitlines():
        if line.strip() == "...":
            lines.append("(?:.*\n)*?")
        else:
            escaped = ".*".join(re.escape(part) for part in line.rstrip().split("..."))
            lines.append(escaped + r"[ \t]*\n")
    return re.compile("".join(lines))


def argv_of(command: str) -> list[str]:
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    words = []
    for word in lexer:
        if word in SHELL_OPERATORS:
            break
        words.append(word)
    if words[0] == "sudo":
        words = words[1:]
    assert words[0] == "kubetunnel", command
    return words[1:]


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSandbox]:
    # No node: nothing in a console block needs a running pod, and start-up stays under a second.
    directory = tmp_path_factory.mktemp("docs-sandbox")
    with running_sandbox(directory, extra_args=("--no-node",)) as running:
        installed = run(["cli", "install", "--no-wait"], running)
        assert installed.returncode == 0, installed.stderr
        yield running


def run(argv: list[str], sandbox: RunningSandbox) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": str(sandbox.kubeconfig), "COLUMNS": "100"}
    return subprocess.run(
        [sys.executable, "-m", "modes", *argv],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=30, check=False,
    )


def test_the_docs_show_the_commands_a_newcomer_needs() -> None:
    # Counted over every document, network.md included: its examples run in its own test.
    everything = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    shown = [
        command
        for doc in everything
        for block in blocks(doc, "console")
        for command in re.findall(r"^\$ (kubetunnel .*)$", block, flags=re.M)
    ]
    for prefix in REQUIRED:
        assert any(c == prefix or c.startswith(prefix + " ") for c in shown), prefix
    assert shell_commands(), "the real-cluster commands (sh blocks) went missing"


def test_the_expected_output_pattern() -> None:
    pattern = expected_pattern("a\n...\nc ... e\n")
    assert pattern.fullmatch("a\nb\nb\nc d e\n")
    assert pattern.fullmatch("a\nc  e\n")
    assert not pattern.fullmatch("a\nc d f\n")


@pytest.mark.parametrize(
    ("doc", "command", "expected"), console_sessions(),
    ids=[f"{doc}: {command}" for doc, command, _ in console_sessions()],
)
def test_console_command_runs_as_shown(
    sandbox: RunningSandbox, doc: str, command: str, expected: str
) -> None:
    argv = shlex.split(command)
    assert argv[0] == "kubetunnel", (
        f"{doc}: console blocks are executed and hold only kubetunnel commands; "
        f"show {command!r} in an sh block"
    )
    result = run(argv[1:], sandbox)
    assert result.returncode == 0, f"{doc}: {command}\n{result.stderr}"
    if expected.strip():
        assert expected_pattern(expected).fullmatch(result.stdout), (
            f"{doc}: the output of {command!r} changed; update the doc. It is now:\n"
            f"{result.stdout}"
        )


@pytest.mark.parametrize(
    ("doc", "command"), shell_commands(), ids=[f"{d}: {c}" for d, c in shell_commands()]
)
def test_real_cluster_command_parses(doc: str, command: str) -> None:
    args = argv_of(command)
    cmd: click.Command = root
    ctx = cmd.make_context("kubetunnel", list(args))
    while isinstance(cmd, click.Group):
        # click keeps the subcommand and its arguments in _protected_args until it invokes.
        rest = [*ctx._protected_args, *ctx.args]
        assert rest, f"{doc}: {command!r} names no subcommand"
        name, sub, rest = cmd.resolve_command(ctx, rest)
        assert sub is not None, f"{doc}: {command!r}"
        assert name is not None
        cmd, ctx = sub, sub.make_context(name, rest, parent=ctx)
