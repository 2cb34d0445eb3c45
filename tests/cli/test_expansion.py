"""$(VAR) expansion, each expectation written from the Kubernetes documentation's rules:
only $(NAME) is a reference, unknown ones stay as written, $$ is a literal $."""

from __future__ import annotations

import pytest

from modes.cli.expansion import expand, lookup_in

DEFINED = {"VAR": "value", "EMPTY": "", "REF": "$(VAR)"}


@pytest.mark.parametrize(("text", "expected"), [
    ("$(VAR)", "value"),
    ("pre-$(VAR)-post", "pre-value-post"),
    ("$(VAR)$(VAR)", "valuevalue"),
    ("$(EMPTY)x", "x"),
    ("$(UNDEFINED)", "$(UNDEFINED)"),          # unresolvable: kept as written
    ("$$(VAR)", "$(VAR)"),                     # escaped reference
    ("$$$(VAR)", "$value"),                    # an escaped $, then a reference
    ("$$$$(VAR)", "$$(VAR)"),
    ("$$", "$"),
    ("$", "$"),
    ("a$", "a$"),
    ("$VAR", "$VAR"),                          # shell syntax is not a reference
    ("${VAR}", "${VAR}"),
    ("$(VAR", "$(VAR"),                        # no closing parenthesis
    ("$()", "$()"),
    ("$(REF)", "$(VAR)"),                      # an expanded value is not expanded again
    ("$($(VAR))", "$($(VAR))"),                # the name runs to the first ')'
    ("100$$ off", "100$ off"),
])
def test_expand(text: str, expected: str) -> None:
    assert expand(text, lookup_in(DEFINED)) == expected


def test_earlier_scope_wins() -> None:
    assert expand("$(A)", lookup_in({"A": "container"}, {"A": "service"})) == "container"
    assert expand("$(B)", lookup_in({"A": "container"}, {"B": "service"})) == "service"
