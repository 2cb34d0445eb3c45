"""Schema validation: built-ins against the official definitions, custom resources against the
structural schema of their CRD. Failures become apimachinery-style field causes (422), except a
wrong JSON type on a built-in, which kube-apiserver already rejects while decoding (400).
"""

from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Iterable
from typing import Any

import jsonschema  # type: ignore[import-untyped]  # no stubs in the runtime dependencies
from referencing import Registry, Resource

from modes.sandbox import schemas
from modes.sandbox.errors import ApiError, bad_request, cause, invalid

Obj = dict[str, Any]

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")


@functools.cache
def _builtin_validator(definition: str) -> jsonschema.protocols.Validator:
    registry: Registry[Any] = Resource.from_contents(schemas.document()) @ Registry()
    schema = {"$ref": f"{schemas.DEFINITIONS_ID}#/$defs/{definition}"}
    return jsonschema.Draft202012Validator(schema, registry=registry)


def field_path(parts: Iterable[Any]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _quote(value: Any) -> str:
    return json.dumps(value) if isinstance(value, str) else json.dumps(value, default=str)


def _has_required(error: jsonschema.ValidationError) -> bool:
    return any(sub.validator == "required" for sub in error.context or ())


def _causes(errors: Iterable[jsonschema.ValidationError]) -> tuple[list[Obj], list[str]]:
    """(causes for 422, type errors for 400)."""
    causes: list[Obj] = []
    type_errors: list[str] = []
    for error in errors:
        path = field_path(error.absolute_path)
        kind = error.validator
        if kind == "required":
            present = error.instance if isinstance(error.instance, dict) else {}
            for name in error.validator_value:
                if name not in present:
                    full = f"{path}.{name}" if path else name
                    causes.append(cause(full, "FieldValueRequired", "Required value"))
        elif kind in ("type", "oneOf", "anyOf") and not _has_required(error):
            type_errors.append(f"{path or '<root>'}: {error.message}")
        elif kind == "enum":
            allowed = ", ".join(_quote(v) for v in error.validator_value if v is not None)
            causes.append(
                cause(
                    path,
                    "FieldValueNotSupported",
                    f"Unsupported value: {_quote(error.instance)}: supported values: {allowed}",
                )
            )
        else:
            causes.append(
                cause(
                    path,
                    "FieldValueInvalid",
                    f"Invalid value: {_quote(error.instance)}: {error.message}",
                )
            )
    return causes, type_errors


def validate_builtin(
    obj: Obj, definition: str, kind: str, group: str, version: str | None = None
) -> list[Obj]:
    """Causes against the official schema; raises 400 for values of the wrong JSON type."""
    validator = _builtin_validator(definition)
    causes, type_errors = _causes(validator.iter_errors(obj))
    if type_errors:
        version = version or obj.get("apiVersion", "")
        raise bad_request(
            f'{kind} in version "{version.rpartition("/")[2]}" cannot be handled as a {kind}: '
            + "; ".join(type_errors)
        )
    return causes


def openapi_to_jsonschema(node: Any) -> Any:
    """A CRD's OpenAPI v3 schema as JSON Schema draft 4 (nullable, int-or-string)."""
    if isinstance(node, list):
        return [openapi_to_jsonschema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out: Obj = {}
    for key, value in node.items():
        if key in ("properties", "patternProperties", "definitions"):
            out[key] = {k: openapi_to_jsonschema(v) for k, v in value.items()}
        elif key in ("items", "additionalProperties", "not", "allOf", "anyOf", "oneOf"):
            out[key] = openapi_to_jsonschema(value)
        elif key.startswith("x-kubernetes-") or key in (
            "default",
            "description",
            "example",
            "nullable",
            "format",
            "externalDocs",
        ):
            continue
        else:
            out[key] = value
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.pop("anyOf", None)
        out["type"] = ["integer", "string"]
    if node.get("nullable") and "type" in out:
        types = out["type"] if isinstance(out["type"], list) else [out["type"]]
        out["type"] = [*types, "null"]
    return out


@functools.cache
def _custom_validator(schema_json: str) -> jsonschema.protocols.Validator:
    schema = openapi_to_jsonschema(json.loads(schema_json))
    # metadata is ObjectMeta whatever the CRD says; validated separately.
    props = schema.get("properties")
    if isinstance(props, dict):
        props.pop("metadata", None)
    return jsonschema.Draft4Validator(schema)


def validate_custom(obj: Obj, schema: Obj) -> list[Obj]:
    validator = _custom_validator(json.dumps(schema, sort_keys=True))
    causes: list[Obj] = []
    for error in validator.iter_errors(obj):
        path = field_path(error.absolute_path)
        if error.validator == "required":
            present = error.instance if isinstance(error.instance, dict) else {}
            for name in error.validator_value:
                if name not in present:
                    causes.append(
                        cause(
                            f"{path}.{name}" if path else name,
                            "FieldValueRequired",
                            "Required value",
                        )
                    )
        elif error.validator == "type":
            wanted = error.validator_value
            wanted = wanted if isinstance(wanted, str) else " or ".join(wanted)
            got = _json_type(error.instance)
            causes.append(
                cause(
                    path,
                    "FieldValueTypeInvalid",
                    f'Invalid value: "{got}": {path} in body must be of type {wanted}: "{got}"',
                )
            )
        elif error.validator == "enum":
            allowed = ", ".join(_quote(v) for v in error.validator_value)
            causes.append(
                cause(
                    path,
                    "FieldValueNotSupported",
                    f"Unsupported value: {_quote(error.instance)}: supported values: {allowed}",
                )
            )
        elif error.validator == "maxLength":
            causes.append(cause(path, "FieldValueTooLong",
                                f"Too long: may not be more than {error.validator_value} bytes"))
        elif error.validator == "maxItems":
            causes.append(cause(path, "FieldValueTooMany", f"Too many: {len(error.instance)}: "
                                f"must have at most {error.validator_value} items"))
        else:
            rule = _bound_rule(error) or error.message
            causes.append(
                cause(
                    path,
                    "FieldValueInvalid",
                    f"Invalid value: {_quote(error.instance)}: {path} in body {rule}",
                )
            )
    return causes


# go-openapi's wording, which kube-apiserver's messages for custom resources carry.
_BOUNDS = {
    "minimum": "should be greater than or equal to {}",
    "maximum": "should be less than or equal to {}",
    "minLength": "should be at least {} chars long",
    "minItems": "should have at least {} items",
    "pattern": "should match '{}'",
}


def _bound_rule(error: jsonschema.ValidationError) -> str | None:
    wording = _BOUNDS.get(str(error.validator))
    if wording is None:
        return None
    schema = error.schema if isinstance(error.schema, dict) else {}
    if error.validator == "minimum" and schema.get("exclusiveMinimum") is True:
        wording = "should be greater than {}"
    elif error.validator == "maximum" and schema.get("exclusiveMaximum") is True:
        wording = "should be less than {}"
    return wording.format(error.validator_value)


def _json_type(value: Any) -> str:
    return {
        bool: "boolean",
        int: "integer",
        float: "number",
        str: "string",
        list: "array",
        dict: "object",
    }.get(type(value), "null")


def transition_rules(new: Any, old: Any, schema: Any, path: str = "") -> list[Obj]:
    """The one CEL rule that needs no CEL engine: ``self == oldSelf`` (an immutable field).

    Other ``x-kubernetes-validations`` rules are not evaluated (see docs/sandbox.md).
    """
    causes: list[Obj] = []
    if not isinstance(schema, dict):
        return causes
    for rule in schema.get("x-kubernetes-validations") or []:
        immutable = "".join(str(rule.get("rule", "")).split()) in ("self==oldSelf", "oldSelf==self")
        if immutable and new != old:
            message = rule.get("message") or f"failed rule: {rule.get('rule')}"
            causes.append(
                cause(path, "FieldValueInvalid", f'Invalid value: "{_json_type(new)}": {message}')
            )
    if isinstance(new, dict) and isinstance(old, dict):
        for name, prop in (schema.get("properties") or {}).items():
            if name in new and name in old:
                child = f"{path}.{name}" if path else name
                causes += transition_rules(new[name], old[name], prop, child)
    return causes


def apply_defaults(obj: Any, schema: Any) -> None:
    """Structural-schema defaulting: a missing property with a ``default`` gets it, in place."""
    if not isinstance(schema, dict):
        return
    if isinstance(obj, dict):
        for name, prop in (schema.get("properties") or {}).items():
            if name not in obj and isinstance(prop, dict) and "default" in prop:
                obj[name] = copy.deepcopy(prop["default"])
            if name in obj:
                apply_defaults(obj[name], prop)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for name in obj:
                if name not in (schema.get("properties") or {}):
                    apply_defaults(obj[name], extra)
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for item in obj:
            apply_defaults(item, schema["items"])


# apimachinery's wording of each rule, examples included: clients and people compare them.
_NAME_RULES = {
    DNS1123_SUBDOMAIN.pattern: "a lowercase RFC 1123 subdomain must consist of lower case "
    "alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character "
    "(e.g. 'example.com'",
    DNS1123_LABEL.pattern: "a lowercase RFC 1123 label must consist of lower case alphanumeric "
    "characters or '-', and must start and end with an alphanumeric character "
    "(e.g. 'my-name',  or '123-abc'",
    DNS1035_LABEL.pattern: "a DNS-1035 label must consist of lower case alphanumeric characters "
    "or '-', start with an alphabetic character, and end with an alphanumeric character "
    "(e.g. 'my-name',  or 'abc-123'",
}
NAME_PART_RULE = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end "
    "with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used "
    "for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')")
LABEL_VALUE_RULE = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or "
    "'.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or "
    "'my_value',  or '12345', regex used for validation is "
    "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')")


def check_metadata(meta: Obj, name_pattern: re.Pattern[str] = DNS1123_SUBDOMAIN) -> list[Obj]:
    """Name, labels and annotations, as ObjectMeta validation does for every kind."""
    causes = []
    name = meta.get("name", "")
    if name and (len(name) > 253 or not name_pattern.match(name)):
        what = _NAME_RULES.get(name_pattern.pattern, _NAME_RULES[DNS1123_SUBDOMAIN.pattern])
        rule = f"{what}, regex used for validation is '{name_pattern.pattern[1:-1]}')"
        if name_pattern is DNS1123_LABEL and DNS1123_SUBDOMAIN.match(name):
            rule = "must not contain dots"  # apimachinery's IsDNS1123Label says just that
        causes.append(
            cause("metadata.name", "FieldValueInvalid", f"Invalid value: {_quote(name)}: {rule}")
        )
    for key, value in (meta.get("labels") or {}).items():
        if not _qualified_key(key):
            causes.append(
                cause(
                    "metadata.labels",
                    "FieldValueInvalid",
                    f"Invalid value: {_quote(key)}: {NAME_PART_RULE}",
                )
            )
        if not isinstance(value, str) or len(value) > 63 or not LABEL_VALUE.match(value):
            causes.append(
                cause(
                    "metadata.labels",
                    "FieldValueInvalid",
                    f"Invalid value: {_quote(value)}: {LABEL_VALUE_RULE}",
                )
            )
    for key in meta.get("annotations") or {}:
        if not _qualified_key(key):
            causes.append(
                cause(
                    "metadata.annotations",
                    "FieldValueInvalid",
                    f"Invalid value: {_quote(key)}: {NAME_PART_RULE}",
                )
            )
    return causes


def _qualified_key(key: str) -> bool:
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not DNS1123_SUBDOMAIN.match(prefix)):
        return False
    return 0 < len(name) <= 63 and bool(QUALIFIED_NAME.match(name))


def raise_if(causes: list[Obj], kind: str, group: str, name: str) -> None:
    if causes:
        raise invalid(kind, group, name, causes)


__all__ = [
    "ApiError",
    "apply_defaults",
    "check_metadata",
    "raise_if",
    "validate_builtin",
    "validate_custom",
]
