"""Request filters of filtered and mirrored intercepts: which HTTP requests belong to a developer.

The CLI parses them from ``--header`` and ``--path-prefix``, records carry them as JSON, and the
agent matches every request against them, so the one definition lives here, below the modes.

Matching rules (docs/architecture.md, "Filtered and mirrored intercepts"):

- ``NAME=VALUE`` matches when the request's NAME header equals VALUE exactly (case-sensitive
  value; header names are case-insensitive). ``NAME~REGEX`` matches when the Python regular
  expression matches the *whole* value (``re.fullmatch``): ``x-dev~alice|bob`` means exactly one
  of those two, ``x-dev~.*alice.*`` means "contains". Whole-value matching is what makes two
  filters comparable (see :meth:`Filter.may_overlap`) and what a reader of ``x-dev~al`` expects.
- A header that appears on several lines is matched as its lines' values joined with ``", "``
  (RFC 9110 5.3), so one request cannot satisfy ``x-dev=alice`` and ``x-dev=bob`` at once by
  sending both. A missing header matches nothing, not even ``~.*``.
- ``--path-prefix`` is a plain string prefix of the request's path (the target without its query,
  not percent-decoded): ``/api/v2/`` matches ``/api/v2/orders`` and not ``/api/v2``.
- Every part of a filter must match. In HTTP/2 the ``host`` header is the ``:authority``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kubetunnel.errors import UsageError

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_MAX_PATTERN = 1000


@dataclass(frozen=True)
class HeaderMatch:
    """One ``--header``: ``name`` lower-case; exactly one of ``equals`` and ``regex`` is set."""

    name: str
    equals: str | None = None
    regex: str | None = None
    _compiled: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.regex is not None and self._compiled is None:  # made directly, not parsed
            object.__setattr__(self, "_compiled", re.compile(self.regex))

    def matches(self, value: str | None) -> bool:
        if value is None:
            return False
        if self._compiled is None:
            return value == self.equals
        return self._compiled.fullmatch(value) is not None

    def describe(self) -> str:
        if self.equals is not None:
            return f"{self.name}={self.equals}"
        return f"{self.name}~{self.regex}"

    def to_dict(self) -> dict[str, str]:
        if self.equals is not None:
            return {"name": self.name, "equals": self.equals}
        assert self.regex is not None
        return {"name": self.name, "regex": self.regex}


def header_match(name: str, *, equals: str | None = None, regex: str | None = None) -> HeaderMatch:
    """A checked :class:`HeaderMatch`; UsageError with one line on bad input."""
    if not _TOKEN.fullmatch(name):
        raise UsageError(f"invalid header name {name!r}: use letters, digits and !#$%&'*+-.^_`|~")
    name = name.lower()
    if (equals is None) == (regex is None):
        raise UsageError(f"header {name}: give exactly one of a value (=) or a pattern (~)")
    if equals is not None:
        if equals != equals.strip() or not equals:
            raise UsageError(f"header {name}={equals!r}: the value is empty or has surrounding "
                             f"spaces (a request's value never has them); use {name}~.* for "
                             "any value")
        if _BAD_VALUE.search(equals):
            raise UsageError(f"header {name}: the value has control characters")
        return HeaderMatch(name, equals=equals)
    assert regex is not None
    if not regex or len(regex) > _MAX_PATTERN:
        raise UsageError(f"header {name}: the pattern must be 1 to {_MAX_PATTERN} characters")
    try:
        compiled = re.compile(regex)
    except re.error as exc:
        raise UsageError(f"header {name}~{regex}: not a valid regular expression ({exc})") from None
    return HeaderMatch(name, regex=regex, _compiled=compiled)


def parse_header(text: str) -> HeaderMatch:
    """``NAME=VALUE`` or ``NAME~REGEX``, split at the first ``=`` or ``~`` (so a name containing
    ``~``, legal but unheard of, cannot be filtered on)."""
    cut = min((i for i in (text.find("="), text.find("~")) if i >= 0), default=-1)
    if cut <= 0:
        raise UsageError(f"--header {text!r}: expected NAME=VALUE or NAME~REGEX")
    name, op, rest = text[:cut], text[cut], text[cut + 1:]
    return header_match(name, equals=rest) if op == "=" else header_match(name, regex=rest)


def check_path_prefix(prefix: str) -> str:
    if not prefix.startswith("/"):
        raise UsageError(f"--path-prefix {prefix!r}: must start with '/'")
    if any(c in prefix for c in "?# ") or _BAD_VALUE.search(prefix) or "\t" in prefix:
        raise UsageError(f"--path-prefix {prefix!r}: a path prefix has no spaces, control "
                         "characters, '?' or '#'")
    return prefix


@dataclass(frozen=True)
class Filter:
    """All of ``headers`` and the path prefix must match. The empty filter matches everything."""

    headers: tuple[HeaderMatch, ...] = ()
    path_prefix: str | None = None

    @property
    def empty(self) -> bool:
        return not self.headers and self.path_prefix is None

    @property
    def header_names(self) -> frozenset[str]:
        return frozenset(match.name for match in self.headers)

    def matches(self, path: str, headers: Mapping[str, str]) -> bool:
        """``headers``: lower-case name -> combined value (it may hold only the names this
        filter uses)."""
        # A loop, not all(...): this runs for every request and intercept.
        if self.path_prefix is not None and not path.startswith(self.path_prefix):
            return False
        for match in self.headers:  # noqa: SIM110 -- not all(...): a generator costs more here
            if not match.matches(headers.get(match.name)):
                return False
        return True

    def may_overlap(self, other: Filter) -> bool:
        """Whether one request could match both filters. Sound (never False when such a request
        exists) and conservative: two patterns on the same header are assumed to overlap unless
        an exact value on that header rules one out, since deciding whether two Python regular
        expressions share a match is not practical."""
        mine, theirs = self.path_prefix or "", other.path_prefix or ""
        if not (mine.startswith(theirs) or theirs.startswith(mine)):
            return False
        # Every name, not only the shared ones: a filter that can match nothing overlaps nothing.
        for name in self.header_names | other.header_names:
            constraints = [m for m in (*self.headers, *other.headers) if m.name == name]
            values = {m.equals for m in constraints if m.equals is not None}
            if len(values) > 1:
                return False
            if values:
                value = values.pop()
                if not all(m.matches(value) for m in constraints):
                    return False
        return True

    def describe(self) -> str:
        parts = [match.describe() for match in self.headers]
        if self.path_prefix is not None:
            parts.append(f"path {self.path_prefix}*")
        return ", ".join(parts) or "every request"

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"headers": [match.to_dict() for match in self.headers]}
        if self.path_prefix is not None:
            data["pathPrefix"] = self.path_prefix
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Filter:
        """The inverse of :meth:`to_dict`, checked as strictly as the CLI's options (a record is
        input too)."""
        if not isinstance(data, Mapping):
            raise UsageError("filter: expected an object")
        unknown = set(data) - {"headers", "pathPrefix"}
        if unknown:
            raise UsageError(f"filter: unknown fields {sorted(unknown)}")
        raw = data.get("headers", [])
        if not isinstance(raw, list):
            raise UsageError("filter: headers must be a list")
        headers = []
        for item in raw:
            if not isinstance(item, Mapping) or not isinstance(item.get("name"), str) \
                    or set(item) - {"name", "equals", "regex"}:
                raise UsageError(f"filter: bad header match {item!r}")
            equals, regex = item.get("equals"), item.get("regex")
            if not isinstance(equals, str | None) or not isinstance(regex, str | None):
                raise UsageError(f"filter: bad header match {item!r}")
            headers.append(header_match(item["name"], equals=equals, regex=regex))
        prefix = data.get("pathPrefix")
        if prefix is not None and not isinstance(prefix, str):
            raise UsageError("filter: pathPrefix must be a string")
        return cls(tuple(headers), None if prefix is None else check_path_prefix(prefix))


def make_filter(headers: Iterable[str] = (), path_prefix: str | None = None) -> Filter:
    """The CLI's entry: ``--header`` texts (repeatable) and ``--path-prefix``."""
    return Filter(tuple(parse_header(text) for text in headers),
                  None if path_prefix is None else check_path_prefix(path_prefix))
