"""A clean exit leaves the hosts file exactly as it was: every byte, a symlink and its target."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modes.cli.hosts import HostEntry, HostsFile, service_names

ENTRIES = [HostEntry("127.77.0.1", service_names("orders", "shop")),
           HostEntry("127.77.0.2", service_names("payments", "shop"))]

# Any bytes, with the line shapes a hosts file really has mixed in so that blank lines, missing
# final newlines and CRLF come up often, not only by chance.
LINES = st.sampled_from([b"\n", b"\r\n", b"127.0.0.1 localhost", b"# comment\n", b"   ", b"\t\n",
                         b"::1 ip6-localhost\n", b"\xff\xfe latin-1 \xe9\n", b"\x00", b"\r"])
CONTENT = st.one_of(st.binary(max_size=300), st.lists(LINES, max_size=12).map(b"".join))


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=CONTENT)
def test_write_then_remove_gives_back_the_same_bytes(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        hosts = Path(tmp) / "hosts"
        hosts.write_bytes(content)
        session = HostsFile(hosts, "s1")
        session.write(ENTRIES)
        text = hosts.read_bytes()
        assert b"\n127.77.0.1\torders orders.shop " in text  # always on a line of its own
        session.write(ENTRIES[:1])
        session.remove()
        assert hosts.read_bytes() == content


@settings(max_examples=150)
@given(content=CONTENT)
def test_two_sessions_ending_in_any_order_give_back_the_same_bytes(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        hosts = Path(tmp) / "hosts"
        hosts.write_bytes(content)
        one, two = HostsFile(hosts, "one"), HostsFile(hosts, "two")
        one.write(ENTRIES[:1])
        two.write(ENTRIES[1:])
        one.remove()
        assert b"127.77.0.2\tpayments" in hosts.read_bytes()
        two.remove()
        assert hosts.read_bytes() == content


def test_trailing_blank_lines_are_kept(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n\n\n")
    session = HostsFile(hosts, "s")
    session.write(ENTRIES)
    session.remove()
    assert hosts.read_text() == "127.0.0.1 localhost\n\n\n"


def test_an_unclosed_begin_line_is_not_a_block_to_drop(tmp_path: Path) -> None:
    content = "127.0.0.1 localhost\n# BEGIN kubetunnel old pid=1\n10.0.0.1 db\n"
    hosts = tmp_path / "hosts"
    hosts.write_text(content)
    session = HostsFile(hosts, "s")
    session.write(ENTRIES)
    assert "10.0.0.1 db" in hosts.read_text()
    session.remove()
    assert hosts.read_text() == content


def test_a_symlinked_hosts_file_stays_a_link_and_its_target_gets_the_entries(
    tmp_path: Path
) -> None:
    etc = tmp_path / "etc"
    store = tmp_path / "store"
    etc.mkdir()
    store.mkdir()
    target = store / "hosts"
    target.write_text("127.0.0.1 localhost\n")
    target.chmod(0o640)
    link = etc / "hosts"
    link.symlink_to(target)
    session = HostsFile(link, "s")
    session.write(ENTRIES)
    assert link.is_symlink()
    assert link.readlink() == target
    assert "127.77.0.1\torders" in target.read_text()
    assert target.stat().st_mode & 0o777 == 0o640
    assert not [p for p in (*etc.iterdir(), *store.iterdir())
                if p.name.startswith(".hosts-kubetunnel-")]
    session.remove()
    assert link.is_symlink()
    assert target.read_text() == "127.0.0.1 localhost\n"


def test_a_relative_symlink_is_followed_too(tmp_path: Path) -> None:
    (tmp_path / "real").write_text("127.0.0.1 localhost")
    link = tmp_path / "hosts"
    link.symlink_to("real")
    session = HostsFile(link, "s")
    session.write(ENTRIES)
    assert link.is_symlink()
    assert "127.77.0.2\tpayments" in (tmp_path / "real").read_text()
    session.remove()
    assert (tmp_path / "real").read_bytes() == b"127.0.0.1 localhost"


def test_owner_and_group_are_kept(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n")
    if os.geteuid() == 0:
        os.chown(hosts, 65534, 65534)  # as /etc/hosts is root's when we run as root: not ours
    else:
        groups = [g for g in os.getgroups() if g != os.getegid()]
        if not groups:
            pytest.skip("needs root or a second group to give the file an owner not our own")
        os.chown(hosts, -1, groups[0])
    before = hosts.stat()
    session = HostsFile(hosts, "s")
    session.write(ENTRIES)
    after = hosts.stat()
    assert (after.st_uid, after.st_gid) == (before.st_uid, before.st_gid)
    session.remove()
    assert hosts.read_text() == "127.0.0.1 localhost\n"
