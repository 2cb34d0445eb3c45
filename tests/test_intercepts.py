"""Filters and intercepts: the CLI's syntax, the JSON form records carry, matching, "first made
wins", and the overlap and conflict rules."""

from __future__ import annotations

import json

import pytest

from kubetunnel.errors import UsageError
from kubetunnel.filters import Filter, make_filter, parse_header
from kubetunnel.intercepts import Intercept, Intercepts, Mode


@pytest.mark.parametrize(("text", "message"), [
    ("x-dev", "expected NAME=VALUE or NAME~REGEX"),
    ("=alice", "expected NAME=VALUE or NAME~REGEX"),
    ("x dev=alice", "invalid header name"),
    ("x:dev=alice", "invalid header name"),
    ("x-dev=", "empty"),
    ("x-dev= alice", "surrounding spaces"),
    ("x-dev=al\x01ice", "control characters"),
    ("x-dev~(alice", "not a valid regular expression"),
    ("x-dev~", "1 to 1000 characters"),
])
def test_bad_header_options_are_one_line_usage_errors(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message) as caught:
        parse_header(text)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("prefix", ["api/v2/", "/a b", "/a?b", "/a#b", "/a\tb", ""])
def test_bad_path_prefixes(prefix: str) -> None:
    with pytest.raises(UsageError, match="--path-prefix"):
        make_filter((), prefix)


def test_header_names_are_case_insensitive_values_exact() -> None:
    flt = make_filter(["X-Dev=alice"])
    assert flt.matches("/", {"x-dev": "alice"})
    assert not flt.matches("/", {"x-dev": "Alice"})
    assert not flt.matches("/", {"x-dev": "alice2"})
    assert not flt.matches("/", {})


def test_regex_matches_the_whole_value() -> None:
    flt = make_filter(["x-dev~al.*"])
    assert flt.matches("/", {"x-dev": "alice"})
    assert not flt.matches("/", {"x-dev": "malice"})  # fullmatch, not search
    assert make_filter(["x-dev~.*al.*"]).matches("/", {"x-dev": "malice"})


def test_value_may_contain_separators() -> None:
    match = parse_header("x-q=a=b~c")
    assert (match.name, match.equals) == ("x-q", "a=b~c")
    match = parse_header("x-q~a=b")
    assert (match.name, match.regex) == ("x-q", "a=b")


def test_all_parts_must_match() -> None:
    flt = make_filter(["x-dev=alice", "x-env~dev|test"], "/api/v2/")
    assert flt.matches("/api/v2/orders", {"x-dev": "alice", "x-env": "dev"})
    assert not flt.matches("/api/v2", {"x-dev": "alice", "x-env": "dev"})
    assert not flt.matches("/api/v2/orders", {"x-dev": "alice", "x-env": "prod"})
    assert not flt.matches("/api/v2/orders", {"x-dev": "alice"})


def test_filters_travel_as_json() -> None:
    flt = make_filter(["x-dev=alice", "x-env~dev|test"], "/api/")
    data = json.loads(json.dumps(flt.to_dict()))
    assert data == {"headers": [{"name": "x-dev", "equals": "alice"},
                                {"name": "x-env", "regex": "dev|test"}], "pathPrefix": "/api/"}
    again = Filter.from_dict(data)
    assert again == flt
    assert again.matches("/api/x", {"x-dev": "alice", "x-env": "test"})
    item = Intercept("i1", Mode.MIRROR, flt, 12.5, "me@host")
    assert Intercept.from_dict(json.loads(json.dumps(item.to_dict()))) == item


@pytest.mark.parametrize("data", [
    [], {"headers": {}}, {"headers": [{"name": "x"}]}, {"headers": [{"name": "x", "equals": 1}]},
    {"headers": [{"name": "x", "equals": "a", "regex": "b"}]}, {"pathPrefix": "nope"},
    {"other": 1}, {"headers": [{"name": "x", "regex": "("}]},
])
def test_bad_json_filters_are_refused(data: object) -> None:
    with pytest.raises(UsageError):
        Filter.from_dict(data)  # type: ignore[arg-type]


def test_describe() -> None:
    assert make_filter(["x-dev=alice", "x-e~a|b"], "/v2/").describe() == \
        "x-dev=alice, x-e~a|b, path /v2/*"
    assert Filter().describe() == "every request"


def _filtered(intercept_id: str, *headers: str, prefix: str | None = None,
              created: float = 0.0) -> Intercept:
    return Intercept(intercept_id, Mode.FILTERED, make_filter(headers, prefix), created,
                     f"{intercept_id}@host")


@pytest.mark.parametrize(("a", "b", "overlap"), [
    ((["x-dev=alice"], None), (["x-dev=bob"], None), False),
    ((["x-dev=alice"], None), (["x-dev=alice"], None), True),
    ((["x-dev=alice"], None), (["x-env=prod"], None), True),  # one request can carry both
    ((["x-dev=alice"], None), (["x-dev~a.*"], None), True),
    ((["x-dev=bob"], None), (["x-dev~a.*"], None), False),
    ((["x-dev~a.*"], None), (["x-dev~b.*"], None), True),  # patterns: assumed to overlap
    (([], "/api/"), ([], "/api/v2/"), True),
    (([], "/api/"), ([], "/web/"), False),
    ((["x-dev=alice"], "/api/"), (["x-dev=alice"], "/web/"), False),
    ((["x-dev=alice", "x-dev=bob"], None), ([], "/"), False),  # cannot match anything
])
def test_overlap_rule(a: tuple[list[str], str | None], b: tuple[list[str], str | None],
                      overlap: bool) -> None:
    first, second = make_filter(*a), make_filter(*b)
    assert first.may_overlap(second) is overlap
    assert second.may_overlap(first) is overlap


def test_first_made_wins_and_overlaps_are_reported() -> None:
    alice = _filtered("alice", "x-dev=alice", created=1.0)
    anyone = _filtered("anyone", "x-dev~.*", created=2.0)
    bob = _filtered("bob", "x-dev=bob", created=3.0)
    table = Intercepts([bob, anyone, alice])
    assert [i.id for i in table] == ["alice", "anyone", "bob"]
    assert table.route("/", {"x-dev": "alice"}) is alice
    assert table.route("/", {"x-dev": "bob"}) is anyone  # older than bob's
    assert table.route("/", {}) is None
    assert table.overlapping(bob) == [anyone]
    assert table.overlapping(alice) == [anyone]
    assert table.without("anyone").overlapping(bob) == []


def test_mirrors_get_copies_and_never_compete() -> None:
    mirror = Intercept("m", Mode.MIRROR, make_filter(["x-dev=alice"]), 0.0)
    every = Intercept("all", Mode.MIRROR, Filter(), 1.0)
    alice = _filtered("alice", "x-dev=alice", created=2.0)
    table = Intercepts([mirror, every, alice])
    assert table.route("/", {"x-dev": "alice"}) is alice
    assert table.mirrors("/", {"x-dev": "alice"}) == [mirror, every]
    assert table.mirrors("/", {}) == [every]
    assert table.overlapping(alice) == []
    assert table.header_names == {"x-dev"}


def test_exclusive_conflicts_with_everything() -> None:
    exclusive = Intercept("ex", Mode.EXCLUSIVE, created=5.0, holder="eve@host")
    alice = _filtered("alice", "x-dev=alice")
    mirror = Intercept("m", Mode.MIRROR, Filter())
    assert Intercepts([alice, mirror]).conflicts(exclusive) == [alice, mirror]
    assert Intercepts([exclusive]).conflicts(alice) == [exclusive]
    assert Intercepts([alice]).conflicts(mirror) == []
    assert "eve@host (exclusive)" in exclusive.describe()


def test_mode_and_filter_must_agree() -> None:
    with pytest.raises(UsageError, match="needs --header or --path-prefix"):
        Intercept("a", Mode.FILTERED)
    with pytest.raises(UsageError, match="exclusive intercept has no filter"):
        Intercept("a", Mode.EXCLUSIVE, make_filter(["x=y"]))
    with pytest.raises(UsageError, match="unknown mode"):
        Intercept.from_dict({"id": "a", "mode": "steal"})
    with pytest.raises(UsageError, match="duplicate"):
        Intercepts([Intercept("a", Mode.MIRROR), Intercept("a", Mode.MIRROR)])
