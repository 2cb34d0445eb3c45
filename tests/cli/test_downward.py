"""Downward-API values, each expectation worked out by hand from the Kubernetes docs
("Expose Pod Information to Containers Through Environment Variables / Files")."""

from __future__ import annotations

from fractions import Fraction

import pytest

from modes.cli.downward import (
    DownwardError,
    MissingAllocatable,
    field_value,
    format_map,
    quantity,
    resource_value,
)

POD = {
    "metadata": {"name": "orders-7d9f", "namespace": "shop", "uid": "u-1",
                 "labels": {"app": "orders", "tier": "back"},
                 "annotations": {"build": "42", "note": 'say "hi"'}},
    "spec": {"nodeName": "node-a", "serviceAccountName": "orders-sa"},
    "status": {"podIP": "10.1.0.7", "podIPs": [{"ip": "10.1.0.7"}, {"ip": "fd00::7"}],
               "hostIP": "192.168.0.2"},
}


@pytest.mark.parametrize(("path", "expected"), [
    ("metadata.name", "orders-7d9f"),
    ("metadata.namespace", "shop"),
    ("metadata.uid", "u-1"),
    ("metadata.labels['app']", "orders"),
    ("metadata.labels['missing']", ""),
    ("metadata.annotations['build']", "42"),
    ("spec.nodeName", "node-a"),
    ("spec.serviceAccountName", "orders-sa"),
    ("status.podIP", "10.1.0.7"),
    ("status.podIPs", "10.1.0.7,fd00::7"),
    ("status.hostIP", "192.168.0.2"),
    ("status.hostIPs", "192.168.0.2"),  # no list: the single address
])
def test_field_values(path: str, expected: str) -> None:
    assert field_value(POD, path) == expected


def test_whole_label_and_annotation_maps_only_in_files() -> None:
    with pytest.raises(DownwardError, match=r"metadata\.labels"):
        field_value(POD, "metadata.labels")
    assert field_value(POD, "metadata.labels", whole_maps=True) == 'app="orders"\ntier="back"'
    assert field_value(POD, "metadata.annotations", whole_maps=True) == \
        'build="42"\nnote="say \\"hi\\""'
    assert format_map({}) == ""


@pytest.mark.parametrize(("text", "expected"), [
    ("1", Fraction(1)), ("250m", Fraction(1, 4)), ("1.5", Fraction(3, 2)),
    ("64Mi", Fraction(64 * 2**20)), ("1G", Fraction(10**9)), ("1k", Fraction(1000)),
    ("2e3", Fraction(2000)), ("100u", Fraction(1, 10_000)), (".5", Fraction(1, 2)),
])
def test_quantities(text: str, expected: Fraction) -> None:
    assert quantity(text) == expected


def test_bad_quantity() -> None:
    with pytest.raises(DownwardError):
        quantity("12 apples")


# The docs' dapi-envars-resourcefieldref pod: requests 125m / 32Mi, limits 250m / 64Mi, which
# the docs show printed as 1, 1, 33554432, 67108864 (cpu rounds up to whole cores).
CONTAINER = {"name": "test-container", "resources": {
    "requests": {"cpu": "125m", "memory": "32Mi"}, "limits": {"cpu": "250m", "memory": "64Mi"}}}


@pytest.mark.parametrize(("resource", "divisor", "expected"), [
    ("requests.cpu", None, "1"),
    ("limits.cpu", None, "1"),
    ("requests.memory", None, "33554432"),
    ("limits.memory", None, "67108864"),
    ("limits.cpu", "1m", "250"),
    ("requests.cpu", "1m", "125"),
    ("limits.memory", "1Mi", "64"),
    ("limits.memory", "1M", "68"),          # 67108864 / 10^6 = 67.1 -> 68
    ("requests.ephemeral-storage", None, "0"),  # unset request: zero
])
def test_resource_values(resource: str, divisor: str | None, expected: str) -> None:
    assert resource_value(CONTAINER, resource, divisor, None) == expected


def test_cpu_rounds_each_side_up() -> None:
    assert resource_value({"resources": {"limits": {"cpu": "1.5"}}}, "limits.cpu", "1", {}) == "2"
    assert resource_value({"resources": {"limits": {"cpu": "2"}}}, "limits.cpu", "500m",
                          {}) == "4"


def test_unset_limits_are_the_nodes_allocatable() -> None:
    bare = {"name": "app"}
    allocatable = {"cpu": "3800m", "memory": "8Gi", "ephemeral-storage": "100Gi"}
    assert resource_value(bare, "limits.cpu", None, allocatable) == "4"
    assert resource_value(bare, "limits.memory", "1Gi", allocatable) == "8"
    assert resource_value(bare, "limits.ephemeral-storage", "1Gi", allocatable) == "100"
    with pytest.raises(MissingAllocatable, match=r"limits\.memory is unset"):
        resource_value(bare, "limits.memory", None, None)
    assert resource_value(bare, "limits.hugepages-2Mi", None, None) == "0"  # not defaulted
