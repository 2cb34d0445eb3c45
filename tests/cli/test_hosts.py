"""Hosts-file blocks: atomic, per session, stale blocks repaired, other lines untouched."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kubetunnel.errors import KubetunnelError
from modes.cli.hosts import HostEntry, HostsFile, service_names

ORIGINAL = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n# a comment a person wrote\n"


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_block_is_added_and_removed_leaving_the_file_as_it_was(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text(ORIGINAL)
    session = HostsFile(hosts, "s1")
    session.write([HostEntry("127.77.0.1", service_names("orders", "shop"))])
    text = hosts.read_text()
    assert text.startswith(ORIGINAL)
    assert "127.77.0.1\torders orders.shop orders.shop.svc orders.shop.svc.cluster.local" in text
    session.remove()
    assert hosts.read_text() == ORIGINAL


def test_sessions_keep_their_own_blocks(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text(ORIGINAL)
    one, two = HostsFile(hosts, "one"), HostsFile(hosts, "two")
    one.write([HostEntry("127.77.0.1", ("a",))])
    two.write([HostEntry("127.77.0.2", ("b",))])
    one.write([HostEntry("127.77.0.3", ("c",))])  # rewrite keeps the other session's block
    text = hosts.read_text()
    assert "127.77.0.2\tb" in text
    assert "127.77.0.3\tc" in text
    assert "127.77.0.1" not in text
    assert two.used_addresses() == {"127.77.0.3"}
    one.remove()
    two.remove()
    assert hosts.read_text() == ORIGINAL


def test_block_of_a_killed_run_is_repaired_on_next_start(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text(ORIGINAL)
    HostsFile(hosts, "killed", pid=_dead_pid()).write([HostEntry("127.77.0.9", ("old",))])
    assert "old" in hosts.read_text()
    fresh = HostsFile(hosts, "fresh")
    assert fresh.used_addresses() == set()  # a dead session's addresses are free again
    stale = fresh.write([HostEntry("127.77.0.1", ("new",))])
    assert stale == ["killed"]
    assert "old" not in hosts.read_text()
    fresh.remove()
    assert hosts.read_text() == ORIGINAL


def test_write_replaces_the_file_atomically(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text(ORIGINAL)
    hosts.chmod(0o644)
    inode = hosts.stat().st_ino
    HostsFile(hosts, "s").write([HostEntry("127.77.0.1", ("x",))])
    assert hosts.stat().st_ino != inode  # renamed over, never half-written in place
    assert hosts.stat().st_mode & 0o777 == 0o644
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".hosts-kubetunnel-")]


def test_invalid_session_id_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KubetunnelError, match="session id"):
        HostsFile(tmp_path / "hosts", "bad id\n# BEGIN")
