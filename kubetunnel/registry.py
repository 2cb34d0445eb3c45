"""The plugin registry: every transport, store and policy renderer, built-ins included, comes
from an entry point, so what ``kubetunnel plugins`` lists is exactly what can be used.

Discovery reads distribution metadata only; a plugin's module is imported when it is first
used, which keeps ``kubetunnel --help`` fast and lets one broken plugin fail alone.
"""

from __future__ import annotations

import builtins
import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, get_args

from kubetunnel.errors import PluginError

if TYPE_CHECKING:
    from importlib import metadata

Kind = Literal["transport", "store", "policy"]
KINDS: tuple[Kind, ...] = get_args(Kind)
GROUPS: dict[Kind, str] = {
    "transport": "kubetunnel.transports",
    "store": "kubetunnel.stores",
    "policy": "kubetunnel.policies",
}
DEFAULTS: dict[Kind, str] = {"transport": "portforward", "store": "crd", "policy": "networkpolicy"}


@dataclass(frozen=True)
class PluginInfo:
    kind: Kind
    name: str
    distribution: str
    value: str  # "module:attribute", as written in the entry point

    @property
    def module(self) -> str:
        return self.value.partition(":")[0]


def _installed_entry_points() -> Iterable[tuple[str, metadata.EntryPoint]]:
    from importlib import metadata  # costs ~10 ms; only needed once plugins are looked up

    for dist in metadata.distributions():
        dist_name = dist.metadata["Name"] or "<unknown>"
        for ep in dist.entry_points:
            yield dist_name, ep


class Registry:
    """Plugins by kind and name. Build one per process (see :func:`get_registry`) or per test."""

    def __init__(
        self,
        source: Callable[[], Iterable[tuple[str, metadata.EntryPoint]]] | None = None,
    ) -> None:
        self._source = source if source is not None else _installed_entry_points
        self._plugins: dict[Kind, dict[str, PluginInfo]] | None = None
        self._factories: dict[tuple[Kind, str], Any] = {}

    def _discover(self) -> dict[Kind, dict[str, PluginInfo]]:
        if self._plugins is not None:
            return self._plugins
        by_group = {group: kind for kind, group in GROUPS.items()}
        found: dict[Kind, dict[str, PluginInfo]] = {kind: {} for kind in KINDS}
        for dist_name, ep in self._source():
            kind = by_group.get(ep.group)
            if kind is None:
                continue
            info = PluginInfo(kind, ep.name, dist_name, ep.value)
            self._add(found, info)
        self._plugins = found
        return found

    @staticmethod
    def _add(found: dict[Kind, dict[str, PluginInfo]], info: PluginInfo) -> None:
        existing = found[info.kind].get(info.name)
        # The same distribution seen twice on sys.path (an editable install next to a zipapp)
        # is one provider, not a clash.
        if existing is not None and (existing.distribution, existing.value) != (
            info.distribution,
            info.value,
        ):
            raise PluginError(
                f"{info.kind} plugin {info.name!r} is registered twice: by "
                f"{existing.distribution} ({existing.value}) and by "
                f"{info.distribution} ({info.value}); uninstall one of them"
            )
        found[info.kind][info.name] = info

    def register(
        self, kind: Kind, name: str, factory: Any, distribution: str = "<runtime>"
    ) -> None:
        """Add a plugin without an entry point (tests, embedding); duplicates are still errors."""
        module = getattr(factory, "__module__", "<runtime>")
        qualname = getattr(factory, "__qualname__", repr(factory))
        self._add(self._discover(), PluginInfo(kind, name, distribution, f"{module}:{qualname}"))
        self._factories[(kind, name)] = factory

    def list(self, kind: Kind | None = None) -> builtins.list[PluginInfo]:
        found = self._discover()
        kinds = KINDS if kind is None else (kind,)
        return [found[k][n] for k in kinds for n in sorted(found[k])]

    def names(self, kind: Kind) -> builtins.list[str]:
        return sorted(self._discover()[kind])

    def info(self, kind: Kind, name: str) -> PluginInfo:
        found = self._discover()[kind]
        if name not in found:
            known = ", ".join(sorted(found)) or "none"
            raise PluginError(f"unknown {kind} plugin {name!r} (installed: {known})")
        return found[name]

    def load(self, kind: Kind, name: str) -> Any:
        """Import and return the factory of plugin ``name``; errors name the plugin and provider."""
        key = (kind, name)
        if key in self._factories:
            return self._factories[key]
        info = self.info(kind, name)
        module_name, _, attr = info.value.partition(":")
        try:
            target: Any = importlib.import_module(module_name.strip())
            for part in filter(None, attr.strip().split(".")):
                target = getattr(target, part)
        except (ImportError, AttributeError) as exc:
            raise PluginError(
                f"{kind} plugin {name!r} from {info.distribution} cannot be loaded "
                f"({info.value}): {exc}"
            ) from exc
        self._factories[key] = target
        return target

    def create(self, kind: Kind, name: str, settings: Any) -> Any:
        """Load plugin ``name`` and build an instance from the kind's settings object."""
        return self.load(kind, name)(settings)


_default: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry, discovered on first use."""
    global _default
    if _default is None:
        _default = Registry()
    return _default


def set_registry(registry: Registry | None) -> Registry | None:
    """Swap the process-wide registry (None: rediscover on next use); returns the previous one."""
    global _default
    previous, _default = _default, registry
    return previous


def parse_kind(value: str) -> Kind:
    if value not in KINDS:
        raise PluginError(f"unknown plugin kind {value!r} (one of: {', '.join(KINDS)})")
    return value  # checked against KINDS just above
