"""What the write path's helpers see of the store: a write's options, and the store itself as a
Protocol.

Decoding, deletion (with the garbage collector) and server-side apply run inside the store's
writes, and ``modes.sandbox.storage`` builds on them; they are typed against :class:`StoreCore`
rather than the ``Store`` class so that the imports point one way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from modes.sandbox.defaulting import Allocator
    from modes.sandbox.resources import ResourceRegistry, ResourceType
    from modes.sandbox.selectors import Selector

Obj = dict[str, Any]
Location = tuple[str, str]  # (namespace, name); namespace is "" for cluster-scoped objects
Where = tuple[tuple[str, str], Location]  # ((group, plural), location)


class WriteOptions:
    """Per-request knobs of a write, and the warnings it produced (sent as Warning headers)."""

    def __init__(
        self,
        *,
        dry_run: bool = False,
        field_validation: str = "Warn",
        field_manager: str | None = None,
        force: bool = False,
    ) -> None:
        self.dry_run = dry_run
        self.field_validation = field_validation or "Warn"
        self.field_manager = field_manager
        self.force = force
        self.applying = False  # set by server-side apply, which records ownership itself
        self.derived_manager = False  # the manager came from the User-Agent, not the request
        self.warnings: list[str] = []


class StoreCore(Protocol):
    """The parts of ``modes.sandbox.storage.Store`` the write path's helpers use."""

    registry: ResourceRegistry
    alloc: Allocator
    validators: dict[tuple[str, str], list[Callable[[Obj, Obj | None], list[Obj]]]]
    # The garbage collector's indexes (see Store.__init__).
    uids: dict[str, Where]
    owned: set[Where]
    terminating: set[Where]
    namespaces_due: set[str]
    namespace_cleanup_delay: float

    def bucket(self, rt: ResourceType) -> dict[Location, Obj]: ...

    def peek(self, rt: ResourceType, namespace: str, name: str) -> Obj | None: ...

    def select(
        self, rt: ResourceType, namespace: str | None = None, selector: Selector | None = None
    ) -> list[Obj]: ...

    def get(self, rt: ResourceType, namespace: str, name: str) -> Obj: ...

    def create(
        self, rt: ResourceType, obj: Obj, namespace: str = "", opts: WriteOptions | None = None
    ) -> Obj: ...

    def update(
        self,
        rt: ResourceType,
        obj: Obj,
        namespace: str,
        name: str,
        opts: WriteOptions | None = None,
        *,
        subresource: str | None = None,
    ) -> Obj: ...

    def put_raw(self, rt: ResourceType, obj: Obj, kind: str, old: Obj | None) -> Obj: ...
