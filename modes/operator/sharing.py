"""The shared agent of a Service: one agent for all its filtered and mirrored intercepts.

While any such record lives (and no exclusive record came first), the Service has ONE agent
Deployment, ``kubetunnel-<service>``, labelled ``kubetunnel.dev/tunnel: <service>.shared`` (the
dot keeps the label apart from every record name), with its Secret, ServiceAccount and origin
Service. The agent routes each request itself (to a developer's laptop or to the origin), so the
Service's selector points at it whenever its pod is Ready, whoever is connected; it is restored
when the pod is not Ready or when the last intercept ends, and then the shared objects go.

The shared objects have no owner reference: no single record owns them. The operator deletes
them when the last record goes; a Service key left behind (its pod or its annotation names the
shared tunnel) is reconciled here too, so an operator restart at any point finds and finishes
the work. The selector rules of :mod:`modes.operator.selectors` hold unchanged.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import timedelta

from kubetunnel.errors import KubetunnelError
from kubetunnel.intercepts import Mode
from kubetunnel.kube import KubeClient
from kubetunnel.logging import get_logger
from kubetunnel.plugins import Store
from kubetunnel.records import PortMapping, TunnelRecord, TunnelStatus, now, shared_service
from modes.operator import agents, conditions, objects, origins, selectors
from modes.operator.conditions import AGENT_CONNECTED, SWITCHED
from modes.operator.planning import Planner
from modes.operator.settings import OperatorSettings
from modes.operator.state import Key, State, pod_ready

log = get_logger(__name__)

Release = Callable[[str, str], Awaitable[None]]
"""Restore every Service a tunnel switched and delete its objects (namespace, tunnel)."""


class Retry(KubetunnelError):
    """The cluster moved under us: look again."""


def order(record: TunnelRecord) -> tuple[float, str]:
    return (record.created_at.timestamp() if record.created_at else float("inf"), record.name)


def shared_record(namespace: str, service: str, tunnel: str, view: selectors.ServiceView
                  ) -> TunnelRecord:
    """The stand-in record the shared objects are planned from: every TCP port of the Service
    (each developer's port mapping is theirs; the agent listens on all of them)."""
    ports = tuple(
        PortMapping(int(p["port"]), int(p["port"]), p.get("targetPort"), p.get("name"))
        for p in view.ports if (p.get("protocol") or "TCP") == "TCP")
    return TunnelRecord(namespace=namespace, name=tunnel, service=service, ports=ports,
                        client="shared", uid=shared_uid(namespace, service))


def shared_uid(namespace: str, service: str) -> str:
    """What the shared objects carry as their record uid: the same for every intercept, so the
    API checks each intercept's report against the one shared token."""
    return f"shared:{namespace}/{service}"


class Sharing:
    def __init__(self, client: KubeClient, store: Store, settings: OperatorSettings,
                 state: State, planner: Planner, release: Release) -> None:
        self.client, self.store, self.settings, self.state = client, store, settings, state
        self.planner, self.release = planner, release
        self.enqueue: Callable[[Key], None] | None = None
        self.overridden: set[Key] = set()  # a person changed the selector: do not switch again

    async def live(self, namespace: str, tunnel: str) -> list[TunnelRecord]:
        """The intercepts the shared agent serves, oldest first: not deleting, lease not
        expired, and not refused because an exclusive record came first."""
        records = await self.store.list(namespace)
        mine = [r for r in records if r.shared and r.agent_tunnel == tunnel]
        if not mine:
            return []
        service = mine[0].service
        exclusive = [r for r in records
                     if r.service == service and not r.shared and not r.deleting]
        at = now()
        return sorted((
            r for r in mine
            if not r.deleting and not any(order(e) < order(r) for e in exclusive)
            and (r.renewed_at or r.created_at or at) + timedelta(
                seconds=self.settings.effective_ttl(r.lease_ttl_seconds)) > at
        ), key=order)

    async def converge(self, namespace: str, tunnel: str) -> None:
        """Make the Service and the shared objects match the live intercepts."""
        key = (namespace, tunnel)
        live = await self.live(namespace, tunnel)
        if not live:
            self.overridden.discard(key)
            await self.release(namespace, tunnel)
            return
        view = await selectors.read(self.client, namespace, live[0].service)
        if view is None or view.selector is None:
            return  # the records say why (ServiceNotFound, ServiceHasNoSelector)
        if view.tunnel is not None and view.tunnel != tunnel:
            return  # an exclusive tunnel holds the Service: the records are refused
        shared = shared_record(namespace, live[0].service, tunnel, view)
        origin = await self.ensure_objects(shared, view)
        alive = any(pod_ready(p) for p in self.state.agent_pods(key))
        labels = objects.tunnel_labels(shared)
        switched_before = view.tunnel == tunnel and view.selector == labels
        if view.tunnel == tunnel and view.selector != labels:
            self.overridden.add(key)
            outcome = await selectors.restore(self.client, view, tunnel, labels)
            log.warning("shared.selector_changed_by_someone", namespace=namespace,
                        service=view.name, selector=view.selector, outcome=outcome)
            if outcome == "retry":
                raise Retry(f"Service {view.name} changed meanwhile")
        elif view.tunnel == tunnel and not alive:
            if await selectors.restore(self.client, view, tunnel, labels) == "retry":
                raise Retry(f"Service {view.name} changed meanwhile")
            log.info("shared.restored", namespace=namespace, service=view.name,
                     why="the shared agent pod is not Ready")
        elif view.tunnel is None and alive and origin is not None and key not in self.overridden:
            if not await selectors.switch(self.client, view, tunnel, labels):
                raise Retry(f"Service {view.name} changed meanwhile")
        else:
            return
        fresh = await selectors.read(self.client, namespace, view.name)
        switched = fresh is not None and fresh.tunnel == tunnel and fresh.selector == labels
        if switched != switched_before and self.enqueue is not None:
            for record in live:  # their status says whether they are connected
                self.enqueue((record.namespace, record.name))

    async def ensure_objects(self, shared: TunnelRecord, view: selectors.ServiceView
                             ) -> str | None:
        """The origin Service, ServiceAccount, Secret and agent Deployment; the origin's
        ClusterIP (None until it has one: the Service is not switched before)."""
        key, ttl = (shared.namespace, shared.name), self.settings.resync
        desired_origin = await self.planner.origin(shared, view, None)
        origin = None
        if desired_origin is not None:
            mark = f"origin:{objects.spec_hash(desired_origin['spec'])}"
            origin = self.state.origins.get(key)
            if origin is None or not self.state.recently_ensured(key, mark, ttl):
                origin = await origins.ensure_origin(self.client, shared, desired_origin)
                if origin is not None:
                    self.state.origins[key] = origin
                    self.state.mark_ensured(key, mark)
        desired = await self.planner.deployment(shared, view, None, origin, shared=True)
        if not self.state.recently_ensured(key, "account", ttl):
            await agents.ensure_account(self.client, shared, None)
            self.state.mark_ensured(key, "account")
        if self.state.token(key, shared.uid, ttl) is None:
            token = await agents.ensure_secret(self.client, shared, None)
            self.state.put_token(key, shared.uid, token)
        mark = f"deployment:{desired['metadata']['annotations'][objects.SPEC_HASH]}"
        if not (self.state.agent_pods(key) and self.state.recently_ensured(key, mark, ttl)):
            await agents.ensure_deployment(self.client, shared, desired)
            self.state.mark_ensured(key, mark)
        return origin



def busy_message(record: TunnelRecord, holders: list[TunnelRecord]) -> str:
    """Why a plain connect is refused: who holds which filter."""
    names = "; ".join(f"{r.client} ({r.mode.value}: {r.filter.describe()})" for r in holders)
    return (f"Service {record.service} has filtered or mirrored intercepts by {names}; a plain "
            "connect takes the whole Service: wait until they disconnect, or connect with "
            "--header or --path-prefix too")


def record_status(record: TunnelRecord, view: selectors.ServiceView | None,
                  status: TunnelStatus) -> TunnelStatus:
    """A filtered or mirrored record is connected while the Service points at the shared agent
    and the agent reports this record's CLI attached with its local process answering."""
    labels = {objects.APP_LABEL: objects.APP_VALUE, objects.TUNNEL_LABEL: record.agent_tunnel}
    switched = view is not None and view.tunnel == record.agent_tunnel \
        and view.selector == labels
    if switched and conditions.is_true(status, AGENT_CONNECTED):
        what = ("a copy of " if record.mode is Mode.MIRROR else "") + record.filter.describe()
        return conditions.with_condition(
            replace(status, connected=True, connected_since=status.connected_since or now()),
            SWITCHED, "True", "Shared",
            f"Service {record.service} goes through its shared agent; {what} -> {record.client}")
    reason, message = (
        ("AgentNotConnected", "waiting for the agent to report this client connected")
        if switched else
        ("SharedAgentNotSwitched",
         "waiting for the shared agent pod to be Ready and the Service to point at it"))
    return conditions.with_condition(replace(status, connected=False, connected_since=None),
                                     SWITCHED, "False", reason, message)


def is_shared_key(key: Key) -> bool:
    return shared_service(key[1]) is not None
