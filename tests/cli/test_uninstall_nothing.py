"""`cli uninstall` on a cluster where KubeTunnel was never installed: said once, not per object.

A module of its own, so that its sandbox has never seen an install."""

from __future__ import annotations

from tests.cli.conftest import Run


def test_uninstall_when_nothing_is_installed_says_so_once(kt: Run) -> None:
    result = kt("cli", "uninstall")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "KubeTunnel is not installed in namespace kubetunnel; nothing to remove."]
    assert result.stderr == ""
