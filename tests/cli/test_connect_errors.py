"""Every bad input to `cli connect` is one line, the right exit code, and changes nothing."""

from __future__ import annotations

from typing import Any

import pytest

from tests.cli.conftest import Run, apply, one_line, service, snapshot


def _connect(kt: Run, namespace: str, *args: str) -> Any:
    return kt("cli", "connect", "-n", namespace, "--no-forward", "--timeout", "5", *args)


def test_missing_operator_is_reported_before_anything_is_written(
    kt: Run, kubectl: Run, namespace: str
) -> None:
    apply(kubectl, service(namespace, "orders"))
    result = _connect(kt, namespace, "orders", "-p", "8080:80")
    one_line(result, 1, "operator is not installed", "kubetunnel cli install")
    # Nothing was written: not even the CRD a record would need.
    assert kubectl("get", "crd", "kubetunnels.application.dcode.tech").returncode != 0


@pytest.mark.usefixtures("installed")
@pytest.mark.parametrize(("args", "code", "fragments"), [
    (("nope", "-p", "8080:80"), 2, ("Service {ns}/nope not found",)),
    (("orders", "-p", "8080:81"), 2, ("has no port 81", "it has: 80 (http)")),
    (("orders", "-p", "8080:grpc"), 2, ("has no port 'grpc'",)),
    (("orders", "-p", "eighty:80"), 2, ("local port 'eighty' is not a number",)),
    (("orders", "-p", "8080"), 2, ("expected LOCAL:REMOTE",)),
    (("handmade", "-p", "8080:80"), 2, ("has no selector",)),
    (("external", "-p", "8080:80"), 2, ("ExternalName",)),
    (("Bad_Name", "-p", "8080:80"), 2, ("invalid Service name",)),
    (("orders", "-p", "8080:80", "--transport", "pigeon"), 2, ("unknown transport plugin",)),
    (("orders", "-p", "8080:80", "--transport", "direct"), 2, ("needs --address",)),
])
def test_bad_input_changes_nothing(
    kt: Run, kubectl: Run, namespace: str, args: tuple[str, ...], code: int,
    fragments: tuple[str, ...],
) -> None:
    apply(
        kubectl,
        service(namespace, "orders"),
        service(namespace, "handmade", selector=None),
        service(namespace, "external", type="ExternalName", externalName="example.invalid",
                 selector=None, ports=None),
    )
    before = snapshot(kubectl, namespace)
    result = _connect(kt, namespace, *args)
    one_line(result, code, *(f.format(ns=namespace) for f in fragments))
    assert snapshot(kubectl, namespace) == before


@pytest.mark.usefixtures("installed")
def test_service_tunneled_by_someone_else_names_them(
    kt: Run, kubectl: Run, namespace: str
) -> None:
    apply(kubectl, service(namespace, "orders"), {
        "apiVersion": "application.dcode.tech/v1", "kind": "Kubetunnel",
        "metadata": {"name": "orders", "namespace": namespace},
        "spec": {"service": "orders", "client": "ada@her-laptop",
                 "ports": [{"servicePort": 80, "localPort": 8080}]},
    })
    before = snapshot(kubectl, namespace)
    result = _connect(kt, namespace, "orders", "-p", "8080:80")
    one_line(result, 2, "already tunneled by ada@her-laptop")
    assert snapshot(kubectl, namespace) == before
