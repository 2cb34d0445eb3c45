"""The registry finds plugins through entry points, names providers, and refuses duplicates."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import pytest

from kubetunnel.errors import PluginError
from kubetunnel.plugins import TransportSettings
from kubetunnel.registry import Registry, get_registry, set_registry
from kubetunnel.testing import isolated_registry
from kubetunnel.transports.loopback import LoopbackTransport


def _ep(name: str, value: str, group: str) -> metadata.EntryPoint:
    return metadata.EntryPoint(name=name, value=value, group=group)


def test_builtins_are_found_through_entry_points() -> None:
    registry = Registry()
    info = registry.info("transport", "loopback")
    assert info.distribution == "kubetunnel"
    assert info.module == "kubetunnel.transports.loopback"
    assert registry.load("transport", "loopback") is LoopbackTransport
    assert "memory" in registry.names("store")


def test_listing_is_sorted_by_kind_then_name() -> None:
    registry = Registry(lambda: [
        ("b-dist", _ep("zeta", "m:Z", "kubetunnel.stores")),
        ("a-dist", _ep("alpha", "m:A", "kubetunnel.stores")),
        ("c-dist", _ep("tcp", "m:T", "kubetunnel.transports")),
        ("d-dist", _ep("other", "m:O", "some.other.group")),
    ])
    rows = [(p.kind, p.name, p.distribution) for p in registry.list()]
    assert rows == [
        ("transport", "tcp", "c-dist"),
        ("store", "alpha", "a-dist"),
        ("store", "zeta", "b-dist"),
    ]
    assert [p.name for p in registry.list("store")] == ["alpha", "zeta"]


def test_duplicate_name_names_both_providers() -> None:
    registry = Registry(lambda: [
        ("first-dist", _ep("tcp", "first.mod:T", "kubetunnel.transports")),
        ("second-dist", _ep("tcp", "second.mod:T", "kubetunnel.transports")),
    ])
    with pytest.raises(PluginError) as err:
        registry.list()
    message = str(err.value)
    assert "first-dist" in message
    assert "second-dist" in message
    assert "first.mod:T" in message
    assert "second.mod:T" in message


def test_same_distribution_seen_twice_is_not_a_duplicate() -> None:
    ep = _ep("tcp", "one.mod:T", "kubetunnel.transports")
    registry = Registry(lambda: [("one", ep), ("one", ep)])
    assert registry.names("transport") == ["tcp"]


def test_same_name_in_different_kinds_is_allowed() -> None:
    registry = Registry(lambda: [
        ("d", _ep("shared", "m:A", "kubetunnel.transports")),
        ("d", _ep("shared", "m:B", "kubetunnel.stores")),
    ])
    assert registry.names("transport") == ["shared"]
    assert registry.names("store") == ["shared"]


def test_unknown_plugin_lists_the_installed_ones() -> None:
    with pytest.raises(PluginError, match=r"unknown store plugin 'nope' \(installed: .*memory"):
        Registry().load("store", "nope")


def test_broken_plugin_fails_alone_with_its_provider_named() -> None:
    registry = Registry(lambda: [
        ("broken-dist", _ep("bad", "kubetunnel_no_such_module:X", "kubetunnel.transports")),
        ("kubetunnel", _ep("loopback", "kubetunnel.transports.loopback:LoopbackTransport",
                           "kubetunnel.transports")),
    ])
    with pytest.raises(PluginError, match="broken-dist"):
        registry.load("transport", "bad")
    assert registry.load("transport", "loopback") is LoopbackTransport


def test_runtime_registration_and_create() -> None:
    registry = Registry(list)
    registry.register("transport", "mine", LoopbackTransport)
    transport = registry.create("transport", "mine", TransportSettings())
    assert isinstance(transport, LoopbackTransport)
    with pytest.raises(PluginError, match="registered twice"):
        registry.register("transport", "mine", object)


def test_default_registry_is_swappable() -> None:
    mine = Registry(list)
    with isolated_registry(mine):
        assert get_registry() is mine
    assert get_registry() is not mine
    previous = set_registry(None)
    try:
        assert get_registry() is not previous  # None means: discover again on next use
    finally:
        set_registry(previous)


def _write_distribution(root: Path, dist: str, entry_points: str, module: str, code: str) -> None:
    """A real installed distribution on disk: what pip leaves behind, minus the wheel."""
    info = root / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))
    (info / "RECORD").write_text("")
    (root / f"{module}.py").write_text(textwrap.dedent(code))


def _run_kubetunnel(*args: str, extra_path: Path) -> subprocess.CompletedProcess[str]:
    import os

    env = {**os.environ, "PYTHONPATH": str(extra_path)}
    return subprocess.run(
        [sys.executable, "-m", "modes", *args],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )


def test_third_party_distribution_is_listed_and_loaded(tmp_path: Path) -> None:
    _write_distribution(
        tmp_path, "acme-kubetunnel-quic",
        """
        [kubetunnel.transports]
        quic = acme_quic:QuicTransport
        """,
        "acme_quic",
        '''
        class QuicTransport:
            """Transport over QUIC, from another wheel."""
            def __init__(self, settings): self.settings = settings
        ''',
    )
    listed = _run_kubetunnel("plugins", "--kind", "transport", extra_path=tmp_path)
    assert listed.returncode == 0, listed.stderr
    row = next(line.split() for line in listed.stdout.splitlines() if " quic " in line)
    assert row == ["transport", "quic", "acme-kubetunnel-quic", "acme_quic"]
    shown = _run_kubetunnel("plugins", "show", "transport", "quic", extra_path=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "Transport over QUIC, from another wheel." in shown.stdout


def test_third_party_duplicate_is_a_one_line_error(tmp_path: Path) -> None:
    _write_distribution(
        tmp_path, "evil-loopback",
        """
        [kubetunnel.transports]
        loopback = evil:Loopback
        """,
        "evil", "class Loopback: pass\n",
    )
    result = _run_kubetunnel("plugins", extra_path=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "evil-loopback" in lines[0]
    assert "kubetunnel (kubetunnel.transports.loopback:LoopbackTransport)" in lines[0]
