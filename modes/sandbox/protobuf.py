"""Request bodies in Kubernetes' protobuf encoding (``application/vnd.kubernetes.protobuf``).

kubectl's typed commands (``kubectl create namespace``, ``configmap``, ``secret``,
``serviceaccount``, ``deployment``, ``service``, ``role``, ``rolebinding``, ``clusterrole``,
``clusterrolebinding``, ``kubectl expose``, ``kubectl auth can-i``, ``kubectl create token``)
send their object in this encoding, which kube-apiserver prefers for built-in types. The body
is the 4-byte magic ``k8s\\0`` and a ``runtime.Unknown`` message whose ``raw`` field holds the
object's message.

The sandbox decodes the messages those commands send into the same JSON object the JSON path
gets, from a table of field numbers per message (``modes.sandbox.protofields``; the numbers are
fixed by Kubernetes' published ``generated.proto`` files and never reused). Kubernetes' encoder
writes every non-pointer field even when it holds its zero value; such a field, known or not, is
dropped, as JSON's ``omitempty`` would. A field that is not in the table and holds a value, or a
kind that has no table, is refused with 415 and a message that says to send JSON instead:
nothing is guessed, and nothing a client sent is silently lost.
"""

from __future__ import annotations

import base64
import datetime
import json
from typing import Any

from modes.sandbox.errors import ApiError, bad_request
from modes.sandbox.protofields import KINDS, MESSAGES, Field

MEDIA_TYPE = "application/vnd.kubernetes.protobuf"
MAGIC = b"k8s\x00"


class Undecodable(Exception):
    """A body this module will not turn into JSON (the caller answers 415)."""


def decode(body: bytes) -> dict[str, Any]:
    """The JSON form of a protobuf request body; raises ApiError (400 or 415) otherwise."""
    if not body.startswith(MAGIC):
        raise bad_request("error decoding request body: protobuf body without the k8s magic")
    try:
        envelope = _message(body[len(MAGIC):], "Unknown")
    except (IndexError, ValueError) as exc:
        raise bad_request(f"error decoding request body: malformed protobuf ({exc})") from None
    except Undecodable as exc:
        raise _unsupported(str(exc)) from None
    type_meta = envelope.get("typeMeta") or {}
    api_version, kind = type_meta.get("apiVersion", ""), type_meta.get("kind", "")
    if envelope.get("contentEncoding"):
        raise _unsupported(f"content encoding {envelope['contentEncoding']!r}")
    message = KINDS.get((api_version, kind))
    if message is None:
        raise _unsupported(f"{kind or 'an object without a kind'} ({api_version or '?'})")
    raw = envelope.get("raw", b"")
    try:
        obj = _message(raw, message)
    except (IndexError, ValueError) as exc:
        raise bad_request(f"error decoding request body: malformed {kind} ({exc})") from None
    except Undecodable as exc:
        raise _unsupported(f"{kind}: {exc}") from None
    return {"apiVersion": api_version, "kind": kind, **obj}


def _unsupported(what: str) -> ApiError:
    return ApiError(
        415, "UnsupportedMediaType",
        f"the sandbox cannot decode this protobuf body ({what}); send it as JSON or YAML "
        f"(for example kubectl create -f or kubectl apply -f)",
    )


def _varint(data: bytes, i: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[i]
        i += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, i
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")


def _wire(data: bytes) -> list[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) of every field, in order."""
    fields: list[tuple[int, int, int | bytes]] = []
    i = 0
    while i < len(data):
        key, i = _varint(data, i)
        number, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, i = _varint(data, i)
        elif wire == 2:
            size, i = _varint(data, i)
            if i + size > len(data):
                raise ValueError("length past the end of the message")
            value, i = data[i:i + size], i + size
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            if i + width > len(data):
                raise ValueError("fixed-width field past the end of the message")
            value, i = int.from_bytes(data[i:i + width], "little"), i + width
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if number == 0:
            raise ValueError("field number 0")
        fields.append((number, wire, value))
    return fields


def _is_zero(value: int | bytes) -> bool:
    """A zero, an empty string, or a message made only of zeros (Go's zero struct)."""
    if isinstance(value, int):
        return value == 0
    if not value:
        return True
    try:
        return all(_is_zero(v) for _, _, v in _wire(value))
    except (IndexError, ValueError):
        return False


def _message(data: bytes, name: str) -> dict[str, Any]:
    table = MESSAGES[name]
    out: dict[str, Any] = {}
    for number, wire, value in _wire(data):
        field = table.get(number)
        if field is None:
            if _is_zero(value):
                continue
            raise Undecodable(f"field {number} of {name} is not one the sandbox knows")
        decoded = _value(field, wire, value, name)
        if decoded is _ZERO:
            continue
        if field.kind.startswith("map:"):
            key, item = decoded
            out.setdefault(field.name, {})[key] = item
        elif field.repeated:
            out.setdefault(field.name, []).append(decoded)
        else:
            out[field.name] = decoded
    return out


_ZERO = object()


def _value(field: Field, wire: int, value: int | bytes, owner: str) -> Any:
    kind = field.kind
    expected = 0 if kind in ("int", "bool") else 2
    if wire != expected:
        raise ValueError(f"{owner}.{field.name}: wire type {wire}, expected {expected}")
    if kind == "int":
        number = _int(value, owner, field)
        return _ZERO if number == 0 and not field.pointer else number
    if kind == "bool":
        return _ZERO if value == 0 and not field.pointer else bool(value)
    if not isinstance(value, bytes):
        raise ValueError(f"{owner}.{field.name}: a number where bytes belong")
    if kind == "string":
        text = value.decode("utf-8")
        return _ZERO if not text and not (field.pointer or field.repeated) else text
    if kind == "bytes":
        return base64.b64encode(value).decode("ascii")
    if kind == "raw":
        return value
    if kind == "json":
        return json.loads(value) if value else _ZERO
    if kind == "time":
        return _time(value)
    if kind == "intorstring":
        parts = {n: v for n, _, v in _wire(value)}
        if parts.get(1, 0) == 1:
            return _text(parts.get(3, b""), owner, field)
        return _int(parts.get(2, 0), owner, field)
    if kind.startswith("map:"):
        entry = {n: (w, v) for n, w, v in _wire(value)}
        key = _text(entry.get(1, (2, b""))[1], owner, field)
        item_kind = kind[4:]
        wire_of_item, raw_item = entry.get(2, (0 if item_kind in ("int", "bool") else 2, b""))
        item = _value(Field(field.name, item_kind, pointer=True), wire_of_item, raw_item, owner)
        if item is _ZERO:
            item = {} if item_kind in MESSAGES else ""
        if item_kind == "Quantity":
            item = item.get("string", "")
        return key, item
    decoded = _message(value, kind)
    return _ZERO if not decoded and not (field.pointer or field.repeated) else decoded


def _int(value: int | bytes, owner: str, field: Field) -> int:
    if not isinstance(value, int):
        raise ValueError(f"{owner}.{field.name}: bytes where a number belongs")
    return value - (1 << 64) if value >= 1 << 63 else value


def _text(value: int | bytes, owner: str, field: Field) -> str:
    if not isinstance(value, bytes):
        raise ValueError(f"{owner}.{field.name}: a number where a string belongs")
    return value.decode("utf-8")


def _time(value: bytes) -> Any:
    parts = {n: v for n, _, v in _wire(value)}
    seconds = _int(parts.get(1, 0), "Time", Field("seconds", "int"))
    if seconds == 0:
        return _ZERO  # Go's zero time: null in JSON
    try:
        moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    except (OverflowError, OSError) as exc:
        raise ValueError(f"time out of range: {seconds} s") from exc
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
