"""``/openapi/v2`` in protobuf, the form kubectl asks for when it validates a ``kind: List``.

kube-apiserver serves the v2 document as gnostic's ``openapi.v2.Document`` message
(``application/com.github.proto-openapi.spec.v2@v1.0+protobuf``). This writes that message from
the same JSON document the sandbox serves, field numbers as gnostic's ``OpenAPIv2.proto``
publishes them. Values the schema language leaves free (``default``, ``enum``, ``example`` and
every ``x-`` extension) are gnostic ``Any`` messages holding YAML; JSON is written there, which
every YAML parser reads.
"""

from __future__ import annotations

import json
import struct
from typing import Any

# What clients ask for (kubectl still sends the older spelling with "@", which is not a valid
# media type token), and what kube-apiserver answers with.
ACCEPTED = ("application/com.github.proto-openapi.spec.v2@v1.0+protobuf",
            "application/com.github.proto-openapi.spec.v2.v1.0+protobuf")
MEDIA_TYPE = ACCEPTED[1]

Obj = dict[str, Any]

# Schema fields by JSON name: (field number, kind).
_SCHEMA_FIELDS: dict[str, tuple[int, str]] = {
    "$ref": (1, "string"), "format": (2, "string"), "title": (3, "string"),
    "description": (4, "string"), "default": (5, "any"), "multipleOf": (6, "double"),
    "maximum": (7, "double"), "exclusiveMaximum": (8, "bool"), "minimum": (9, "double"),
    "exclusiveMinimum": (10, "bool"), "maxLength": (11, "int"), "minLength": (12, "int"),
    "pattern": (13, "string"), "maxItems": (14, "int"), "minItems": (15, "int"),
    "uniqueItems": (16, "bool"), "maxProperties": (17, "int"), "minProperties": (18, "int"),
    "required": (19, "strings"), "enum": (20, "anys"), "discriminator": (26, "string"),
    "readOnly": (27, "bool"), "example": (30, "any"),
}
_ADDITIONAL_PROPERTIES, _TYPE, _ITEMS, _ALL_OF, _PROPERTIES, _VENDOR = 21, 22, 23, 24, 25, 31


def document(info: Obj, definitions: bytes) -> bytes:
    """gnostic ``Document``: swagger (1), info (2), definitions (9) from :func:`named_schemas`."""
    out = bytearray(_string(1, "2.0"))
    out += _message(2, _string(1, info.get("title", "")) + _string(2, info.get("version", "")))
    out += _message(9, definitions)
    return bytes(out)


def named_schemas(definitions: Obj) -> bytes:
    """The repeated ``NamedSchema`` entries of ``Definitions``; concatenations of these are
    themselves valid entries (the built-ins are encoded once, custom resources per request)."""
    return b"".join(_message(1, _string(1, name) + _message(2, schema(value)))
                    for name, value in definitions.items())


def schema(node: Obj) -> bytes:
    """gnostic ``Schema`` from a JSON Schema object of the v2 document."""
    out = bytearray()
    for key, value in node.items():
        if key in _SCHEMA_FIELDS:
            number, kind = _SCHEMA_FIELDS[key]
            out += _scalar(number, kind, value)
        elif key == "type":
            kinds = value if isinstance(value, list) else [value]
            out += _message(_TYPE, b"".join(_string(1, k) for k in kinds))
        elif key == "items":
            items = value if isinstance(value, list) else [value]
            out += _message(_ITEMS, b"".join(_message(1, schema(i)) for i in items))
        elif key == "allOf":
            out += b"".join(_message(_ALL_OF, schema(s)) for s in value)
        elif key == "properties":
            out += _message(_PROPERTIES, b"".join(
                _message(1, _string(1, name) + _message(2, schema(sub)))
                for name, sub in value.items()))
        elif key == "additionalProperties":
            inner = (_message(1, schema(value)) if isinstance(value, dict)
                     else _key(2, 0) + _varint(1 if value else 0))
            out += _message(_ADDITIONAL_PROPERTIES, inner)
        elif key.startswith("x-"):
            out += _message(_VENDOR, _string(1, key) + _message(2, _any(value)))
        # Anything else (xml, externalDocs, patternProperties) is not part of what v2 clients
        # read from kube-apiserver's document either.
    return bytes(out)


def _scalar(number: int, kind: str, value: Any) -> bytes:
    if kind == "string":
        return _string(number, str(value))
    if kind == "bool":
        return _key(number, 0) + _varint(1 if value else 0)
    if kind == "int":
        return _key(number, 0) + _varint(int(value))
    if kind == "double":
        return _key(number, 1) + struct.pack("<d", float(value))
    if kind == "strings":
        return b"".join(_string(number, str(v)) for v in value)
    if kind == "anys":
        return b"".join(_message(number, _any(v)) for v in value)
    return _message(number, _any(value))  # "any"


def _any(value: Any) -> bytes:
    """gnostic ``Any``: the value as YAML text (field 2)."""
    return _string(2, json.dumps(value))


def _key(number: int, wire: int) -> bytes:
    return _varint(number << 3 | wire)


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _string(number: int, text: str) -> bytes:
    return _message(number, text.encode())


def _message(number: int, payload: bytes) -> bytes:
    return _key(number, 2) + _varint(len(payload)) + payload
