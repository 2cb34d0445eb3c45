"""Kubeconfig files checked the way kubectl reads them, before the official loader sees them.

The official client reports a missing file as "No configuration found", a malformed one with
whatever Python error its dict handling hits first, and an absent current context not at all
until the first request goes to localhost. Here each becomes one line that names the file and
what to do about it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from kubetunnel.errors import KubetunnelError

DEFAULT = "~/.kube/config"
_LISTS = ("clusters", "contexts", "users")


def _describe(value: object) -> str:
    kinds = {str: "a string", list: "a list", int: "a number", float: "a number",
             bool: "a boolean"}
    return kinds.get(type(value), type(value).__name__)


def _source(explicit: str | None) -> tuple[str, str]:
    """(the path list as given, where it came from) with kubectl's precedence."""
    if explicit:
        return explicit, "--kubeconfig"
    if os.environ.get("KUBECONFIG"):
        return os.environ["KUBECONFIG"], "KUBECONFIG"
    return DEFAULT, "the default location"


def _load_one(path: Path) -> dict[str, Any] | None:
    try:
        text = path.read_text()
    except IsADirectoryError:
        raise KubetunnelError(f"cannot load kubeconfig {path}: it is a directory, not a "
                              "file") from None
    except PermissionError:
        raise KubetunnelError(f"cannot load kubeconfig {path}: permission denied; make it "
                              "readable by you (it holds your credentials: chmod 600)") from None
    except UnicodeDecodeError:
        raise KubetunnelError(f"cannot load kubeconfig {path}: not valid YAML (not UTF-8 "
                              "text)") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or "cannot be parsed"
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise KubetunnelError(f"cannot load kubeconfig {path}: not valid YAML ({where}{problem}); "
                              "fix the file, or point --kubeconfig or KUBECONFIG at another "
                              "one") from None
    if data is None:
        return None  # an empty file is an empty config, as kubectl reads it
    if not isinstance(data, dict):
        raise KubetunnelError(f"cannot load kubeconfig {path}: not a kubeconfig (it holds "
                              f"{_describe(data)} where kind: Config with clusters, contexts "
                              "and users belongs)")
    for key in _LISTS:
        value = data.get(key)
        if value is not None and not (isinstance(value, list)
                                      and all(isinstance(item, dict) for item in value)):
            raise KubetunnelError(f"cannot load kubeconfig {path}: {key} must be a list of "
                                  f"named entries, not {_describe(value)}")
    return data


def check_kubeconfig(explicit: str | None, context: str | None) -> None:
    """Raise KubetunnelError with one actionable line when kubectl would fail to use the files.

    Files named in KUBECONFIG that do not exist are skipped, as kubectl skips them; an explicit
    --kubeconfig must exist.
    """
    raw, origin = _source(explicit)
    paths = [Path(p).expanduser() for p in raw.split(os.pathsep) if p]
    existing = [p for p in paths if p.exists()]
    if explicit and len(existing) < len(paths):
        missing = next(p for p in paths if not p.exists())
        raise KubetunnelError(f"cannot load kubeconfig {missing}: file not found (check the path "
                              "given with --kubeconfig)")
    if not existing:
        raise KubetunnelError(
            f"cannot load kubeconfig {raw}: file not found ({origin}); pass --kubeconfig PATH "
            "or set KUBECONFIG to your cluster's kubeconfig (kubectl config view shows what "
            "kubectl uses)")
    contexts: list[str] = []
    current: str | None = None
    for path in existing:
        data = _load_one(path)
        if data is None:
            continue
        contexts += [str(c.get("name")) for c in data.get("contexts") or [] if c.get("name")]
        current = current or data.get("current-context") or None  # the first file's wins
    have = ", ".join(contexts) or "none"
    if context:
        if context not in contexts:
            raise KubetunnelError(f"context {context!r} not found in kubeconfig {raw} "
                                  f"(it has: {have})")
    elif not current:
        raise KubetunnelError(
            f"kubeconfig {raw} has no current context; choose one with "
            f"'kubectl config use-context NAME' or pass --context NAME (it has: {have})")
    elif current not in contexts:
        raise KubetunnelError(
            f"the current context {current!r} of kubeconfig {raw} does not exist (it has: "
            f"{have}); choose one with 'kubectl config use-context NAME'")
