"""Filtered and mirrored records keep their mode and filter through every store's shape."""

from __future__ import annotations

import pytest

from kubetunnel.errors import UsageError
from kubetunnel.filters import make_filter
from kubetunnel.intercepts import Mode
from kubetunnel.records import TunnelRecord, TunnelStatus, record_from_spec, shared_tunnel


def test_mode_filter_and_counts_round_trip() -> None:
    record = TunnelRecord("shop", "orders-1a2b3c4d", "orders", (), "a@b", mode=Mode.FILTERED,
                          filter=make_filter(["x-dev=alice", "x-env~dev|test"], "/api/"))
    back = record_from_spec("shop", record.name, record.spec_dict())
    assert (back.mode, back.filter) == (Mode.FILTERED, record.filter)
    assert back.agent_tunnel == shared_tunnel("orders") == "orders.shared"
    status = TunnelStatus(requests=7, mirror_dropped=2)
    assert TunnelStatus.from_dict(status.to_dict()) == status


def test_old_records_read_as_exclusive_and_keep_their_shape() -> None:
    record = record_from_spec("shop", "orders", {"service": "orders", "client": "a@b"})
    assert record.mode is Mode.EXCLUSIVE
    assert record.agent_tunnel == "orders"
    assert "mode" not in record.spec_dict()
    assert "requests" not in TunnelStatus().to_dict()


def test_a_bad_mode_is_a_one_line_error() -> None:
    with pytest.raises(UsageError, match="unknown intercept mode 'steal'"):
        record_from_spec("shop", "o", {"service": "o", "mode": "steal"})
