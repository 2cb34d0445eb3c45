"""What the node needs from the API server's storage, as a Protocol.

The kubelet, the proxy and the node's HTTP handlers are written against this rather than the
sandbox's storage module so that they can be tested in isolation, and so that the contract
between the two halves of the sandbox is stated in one place: read objects, follow changes,
bind a pod to the node, write pod status, and remove a pod once its processes are gone (the
kubelet's final delete). ``modes.sandbox.node.adapter`` implements it on the sandbox store.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

Obj = dict[str, Any]
Key = tuple[str, str]  # (group, plural), the storage key of a resource type

PODS: Key = ("", "pods")
SERVICES: Key = ("", "services")
ENDPOINTS: Key = ("", "endpoints")
SECRETS: Key = ("", "secrets")
CONFIGMAPS: Key = ("", "configmaps")
SERVICEACCOUNTS: Key = ("", "serviceaccounts")
NAMESPACES: Key = ("", "namespaces")
ENDPOINTSLICES: Key = ("discovery.k8s.io", "endpointslices")
DEPLOYMENTS: Key = ("apps", "deployments")
REPLICASETS: Key = ("apps", "replicasets")


class NodeStore(Protocol):
    """The in-process API the node components call (never HTTP: they live in the same process)."""

    async def get(self, key: Key, namespace: str, name: str) -> Obj | None:
        """The object, or None when it does not exist."""
        ...

    async def list(self, key: Key, namespace: str | None = None) -> list[Obj]: ...

    def watch(self, key: Key, namespace: str | None = None) -> AsyncIterator[tuple[str, Obj]]:
        """(type, object) pairs: a synthetic ADDED for every existing object, then each change.

        Types are ADDED, MODIFIED and DELETED, as on the wire. The iterator runs until cancelled.
        """
        ...

    async def update_status(self, key: Key, namespace: str, name: str, status: Obj) -> Obj | None:
        """Replace the status of an object (the /status subresource); None if it is gone."""
        ...

    async def delete(self, key: Key, namespace: str, name: str) -> None:
        """Remove an object now (grace period 0); a no-op when it is already gone."""
        ...

    async def bind(self, namespace: str, name: str, node: str) -> None:
        """Set a pod's spec.nodeName (the pods/binding subresource, the scheduler's write).

        A bound pod is deleted gracefully by the API server, which is why the kubelet binds
        the pods it runs: the sandbox has one node, so scheduling is just this write.
        """
        ...


class ControllerStore(NodeStore, Protocol):
    """What the controllers write besides status: whole objects they own."""

    async def create(self, key: Key, namespace: str, obj: Obj) -> Obj | None:
        """Create (validated and defaulted as any client's object); None if it already exists."""
        ...

    async def replace(self, key: Key, namespace: str, name: str, obj: Obj) -> Obj | None:
        """Replace the object's spec and metadata unconditionally; None if it is gone."""
        ...
