"""Kubernetes' ``$(VAR)`` expansion of ``env[].value``, ``command``, ``args`` and ``subPathExpr``.

The rules are the kubelet's (documented in "Define Dependent Environment Variables"), which
differ from a shell's: only ``$(NAME)`` is a reference, a reference to a name that is not
defined stays as written, ``$$`` is one literal ``$`` (so ``$$(NAME)`` is the text
``$(NAME)``), and any other ``$`` is kept. Written from the documented behaviour, scanning
left to right once, so an expanded value is never expanded again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

Lookup = Callable[[str], str | None]


def lookup_in(*scopes: Mapping[str, str]) -> Lookup:
    """Look a name up in ``scopes`` in order: the container's variables, then Service ones."""

    def lookup(name: str) -> str | None:
        for scope in scopes:
            if name in scope:
                return scope[name]
        return None

    return lookup


def expand(text: str, lookup: Lookup) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char != "$" or i + 1 == len(text):
            out.append(char)
            i += 1
            continue
        following = text[i + 1]
        if following == "$":  # an escaped operator
            out.append("$")
            i += 2
        elif following == "(":
            close = text.find(")", i + 2)
            if close < 0:  # no closing parenthesis: not a reference, keep the text
                out.append("$(")
                i += 2
                continue
            name = text[i + 2:close]
            value = lookup(name)
            out.append(f"$({name})" if value is None else value)
            i = close + 1
        else:
            out.append("$" + following)
            i += 2
    return "".join(out)
