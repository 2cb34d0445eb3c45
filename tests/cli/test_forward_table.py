"""The address table printed with --no-hosts lists every forwarded Service and its ports."""

from __future__ import annotations

from modes.cli.forward import FORWARD_CIDR, Forwarded, address_table


def test_address_table_lines_up_addresses_services_and_ports() -> None:
    table = address_table([
        Forwarded("shop", "orders", "127.10.0.5", "127.77.0.1", ((80, 8080, "http"),)),
        Forwarded("shop", "payments", "127.10.0.6", "127.77.0.2",
                  ((443, 8443, "https"), (9090, 9090, None))),
    ])
    lines = table.splitlines()
    assert lines[0].split() == ["ADDRESS", "SERVICE", "PORTS"]
    assert lines[1].split() == ["127.77.0.1", "orders.shop", "80"]
    assert lines[2].split() == ["127.77.0.2", "payments.shop", "443,9090"]
    assert len({line.index("orders") if "orders" in line else None for line in lines[1:2]}) == 1


def test_forward_addresses_stay_clear_of_the_sandbox_ranges() -> None:
    import ipaddress

    for sandbox_range in ("127.1.0.0/16", "127.10.0.0/16"):
        assert not FORWARD_CIDR.overlaps(ipaddress.ip_network(sandbox_range))
