"""A JSON schema for the part of CiliumNetworkPolicy (cilium.io/v2) that KubeTunnel renders.

Written from the field names and types of Cilium's CRD (spec.endpointSelector, ingress[] with
fromEndpoints, egress[] with toEndpoints, toPorts[].ports[] with port as a string, protocol from
a fixed set). Everything else is refused (``additionalProperties: false``), so a misspelt field,
a port given as an integer or a selector in the wrong place fails here, not on a cluster.
"""

from __future__ import annotations

from typing import Any

import jsonschema

_LABEL_VALUE = {"type": "string", "maxLength": 63}

LABEL_SELECTOR: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "matchLabels": {"type": "object", "additionalProperties": _LABEL_VALUE},
        "matchExpressions": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["key", "operator"],
                "properties": {
                    "key": {"type": "string"},
                    "operator": {"enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                    "values": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    },
}

PORT_PROTOCOL: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["port"],
    "properties": {
        # Cilium's CRD types the port as a string: a number 0-65535 or a port name.
        "port": {
            "type": "string",
            "pattern": r"^(0|[1-9][0-9]{0,4}|[a-z]([-a-z0-9]*[a-z0-9])?)$",
        },
        "endPort": {"type": "integer", "minimum": 0, "maximum": 65535},
        "protocol": {"enum": ["TCP", "UDP", "SCTP", "ICMP", "ICMPv6", "VRRP", "IGMP", "ANY"]},
    },
}

PORT_RULE: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"ports": {"type": "array", "items": PORT_PROTOCOL, "maxItems": 40}},
}


def _rule(peers_key: str) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            peers_key: {"type": "array", "items": LABEL_SELECTOR},
            "toPorts": {"type": "array", "items": PORT_RULE},
        },
    }


SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "cilium.io/v2"},
        "kind": {"const": "CiliumNetworkPolicy"},
        "metadata": {
            "type": "object",
            "required": ["name", "namespace"],
            "properties": {
                "name": {"type": "string", "maxLength": 253},
                "namespace": {"type": "string", "maxLength": 63},
                "labels": {"type": "object", "additionalProperties": _LABEL_VALUE},
                "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["endpointSelector"],
            "properties": {
                "description": {"type": "string"},
                "endpointSelector": LABEL_SELECTOR,
                "ingress": {"type": "array", "items": _rule("fromEndpoints")},
                "egress": {"type": "array", "items": _rule("toEndpoints")},
            },
        },
    },
}


def validate(obj: dict[str, Any]) -> None:
    """Raise ``jsonschema.ValidationError`` unless ``obj`` fits the schema above."""
    jsonschema.Draft202012Validator(SCHEMA).validate(obj)
