"""What `cli connect` tells the developer while it waits on the operator."""

from __future__ import annotations

import io

from kubetunnel.records import RECONCILED, Condition, PortMapping, TunnelRecord, TunnelStatus
from modes.cli.connect import Connection, Settings
from modes.cli.options import KubeOptions
from modes.cli.ports import PortRequest
from modes.cli.progress import Progress


def _record(*conditions: Condition) -> TunnelRecord:
    return TunnelRecord(
        namespace="shop", name="orders", service="orders", client="ada@laptop",
        ports=(PortMapping(service_port=80, local_port=8080, target_port=8080, name="http"),),
        status=TunnelStatus(conditions=conditions))


def test_the_operators_trouble_is_said_once_and_so_is_its_end() -> None:
    settings = Settings("orders", (PortRequest(8080, 80),), "127.0.0.1", "portforward", "crd",
                        "kubetunnel", 60, True, False, None, 30.0)
    connection = Connection(KubeOptions(None, None, None), settings)
    out = io.StringIO()
    connection.progress = Progress(out)
    denied = Condition(RECONCILED, "False", "Forbidden", 'not allowed: services "orders" is '
                       "forbidden")
    fine = Condition(RECONCILED, "True", "Reconciled", "the operator's last reconcile succeeded")
    for current in (_record(), _record(denied), _record(denied), None, _record(denied),
                    _record(fine), _record(fine)):
        connection._show_trouble(current)
    assert out.getvalue().splitlines() == [
        '  operator: not allowed: services "orders" is forbidden',
        "  operator: working again",
    ]
