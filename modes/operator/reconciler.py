"""One reconcile of one record: read the record and the cluster, make the cluster match.

Level-triggered on purpose: nothing here asks *what happened* (which event, which report);
it compares what the record and the agent's last report (a status condition) want with what the
Service, the Deployment and the agent pod are, and closes the gap. Run it twice, or after a crash
at any line, and it ends in the same place.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from kubetunnel.errors import KubetunnelError, NotFound
from kubetunnel.kube import ApiError, KubeClient
from kubetunnel.logging import get_logger
from kubetunnel.plugins import Store
from kubetunnel.records import RECONCILED, TunnelRecord, TunnelStatus, now, shared_service
from modes.operator import agents, conditions, objects, origins, selectors, sharing
from modes.operator.conditions import ACCEPTED, AGENT_CONNECTED, AGENT_READY, SWITCHED
from modes.operator.events import Recorder
from modes.operator.metrics import Metrics
from modes.operator.planning import Planner
from modes.operator.settings import OperatorSettings
from modes.operator.state import Key, State, pod_ready, record_key

log = get_logger(__name__)

FINALIZER = "kubetunnel.dev/selector"


class Retry(KubetunnelError):
    """The cluster moved under us (a Service changed between read and patch): look again."""


class Reconciler:
    def __init__(self, client: KubeClient, store: Store, settings: OperatorSettings,
                 state: State, recorder: Recorder, metrics: Metrics) -> None:
        self.client, self.store, self.settings = client, store, settings
        self.state, self.recorder, self.metrics = state, recorder, metrics
        self.planner = Planner(client, settings)
        self.sharing = sharing.Sharing(client, store, settings, state, self.planner,
                                       self.release_orphans)

    def owner(self, record: TunnelRecord) -> dict[str, Any] | None:
        reference = getattr(self.store, "owner_reference", None)
        return reference(record) if reference is not None else None

    async def __call__(self, key: Key) -> float | None:
        try:
            return await self._reconcile(key)
        except ApiError as exc:
            if exc.status == 403:
                await self._report_forbidden(key, exc)
            raise

    async def _report_forbidden(self, key: Key, exc: ApiError) -> None:
        """Put an RBAC denial on the record (condition and event), where the CLI and kubectl
        describe show it; the engine retries with back-off as for any failure."""
        message = (f"not allowed: {exc}; grant the operator that permission "
                   f"(manifests/clusterrole.yaml lists what it needs)")
        try:
            record = await self.store.get(*key)
            if record is None or record.deleting:
                return
            status = conditions.with_condition(record.status, RECONCILED, "False", "Forbidden",
                                               message)
            await self.write_status(record, status, failed=message)
        except KubetunnelError as failure:  # the status itself may be what is forbidden
            log.warning("reconcile.report_failed", tunnel=f"{key[0]}/{key[1]}",
                        error=str(failure))

    async def _reconcile(self, key: Key) -> float | None:
        namespace, name = key
        if shared_service(name) is not None:  # a Service's shared agent, not a record
            await self.sharing.converge(namespace, name)
            return self.settings.resync
        record = await self.store.get(namespace, name)
        if record is None:
            self.state.drop_record(key)
            await self.release_orphans(namespace, name)
            return None
        self.state.put_record(record)
        if record.deleting:
            await self.finalize(record)
            return None
        ttl = self.settings.effective_ttl(record.lease_ttl_seconds)
        reference = record.renewed_at or record.created_at or now()
        left = (reference + timedelta(seconds=ttl) - now()).total_seconds()
        if left <= 0:
            await self.expire(record, ttl)
            return None
        if FINALIZER not in record.finalizers:
            record = await self.store.replace(
                record.replace(finalizers=(*record.finalizers, FINALIZER))
            )
            self.state.put_record(record)
        wake = await self.converge(record)
        return min(x for x in (left + 0.05, wake, self.settings.resync) if x is not None)

    # -- the record's life ---------------------------------------------------------------------
    async def converge(self, record: TunnelRecord) -> float | None:
        status = record.status
        if status.trouble() is not None:  # written only if this attempt gets to write
            status = conditions.with_condition(status, RECONCILED, "True", "Reconciled",
                                               "the operator's last reconcile succeeded")
        service = await selectors.read(self.client, record.namespace, record.service)
        refusal = await self.refusal(record, service)
        if refusal is not None:
            reason, message = refusal
            status = conditions.with_condition(status, ACCEPTED, "False", reason, message)
            status = replace(status, phase="Failed", connected=False)
            await self.write_status(record, status, failed=message)
            return None
        assert service is not None
        assert service.selector is not None
        status = conditions.with_condition(status, ACCEPTED, "True", "Accepted",
                                           f"tunneling Service {record.service}")
        if record.shared:
            await self.sharing.converge(record.namespace, record.agent_tunnel)
            status, wake, _ = self.agent_state(record, status)
            view = await selectors.read(self.client, record.namespace, record.service)
            status = sharing.record_status(record, view, status)
            await self.write_status(record, self.phase(status))
            return wake
        try:
            await self.ensure_objects(record, service)
        except agents.Held as held:
            if shared_service(held.tunnel) is not None:
                holders = await self.sharing.live(record.namespace, held.tunnel)
                if not holders:
                    await self.release_orphans(record.namespace, held.tunnel)
                    raise Retry(f"removed the shared agent {held.tunnel} left behind") from held
                message = sharing.busy_message(record, holders)
                status = conditions.with_condition(status, ACCEPTED, "False",
                                                   "ServiceAlreadyTunneled", message)
                await self.write_status(record, replace(status, phase="Failed"), failed=message)
                return None
            if await self.store.get(record.namespace, held.tunnel) is None:
                # Left behind by a record that is gone (its finalizer was removed by hand).
                await self.release_orphans(record.namespace, held.tunnel)
                raise Retry(f"removed objects left by tunnel {held.tunnel}") from held
            message = await self.held_message(record, held.tunnel)
            status = conditions.with_condition(status, ACCEPTED, "False",
                                               "ServiceAlreadyTunneled", message)
            await self.write_status(record, replace(status, phase="Failed"), failed=message)
            return None
        status, wake, alive = self.agent_state(record, status)
        record, status = await self.converge_selector(record, service, status, alive)
        await self.write_status(record, self.phase(status))
        return wake

    async def ensure_objects(self, record: TunnelRecord, service: selectors.ServiceView) -> None:
        """The ServiceAccount, Secret and Deployment, each read at most once per resync period
        while nothing about it changed: reports must not wait for three needless GETs. A missing
        agent pod always sends us to look at the Deployment."""
        key, ttl = record_key(record), self.settings.resync
        origin = await self.ensure_origin(record, service)
        desired = await self.planner.deployment(record, service, self.owner(record), origin)
        if not self.state.recently_ensured(key, f"account:{record.uid}", ttl):
            await agents.ensure_account(self.client, record, self.owner(record))
            self.state.mark_ensured(key, f"account:{record.uid}")
        if self.state.token(key, record.uid, ttl) is None:
            token = await agents.ensure_secret(self.client, record, self.owner(record))
            self.state.put_token(key, record.uid, token)
        mark = f"deployment:{record.uid}:{desired['metadata']['annotations'][objects.SPEC_HASH]}"
        if self.state.agent_pods(key) and self.state.recently_ensured(key, mark, ttl):
            return
        await agents.ensure_deployment(self.client, record, desired)
        self.state.mark_ensured(key, mark)

    async def ensure_origin(self, record: TunnelRecord, service: selectors.ServiceView
                            ) -> str | None:
        """The origin Service's ClusterIP, for the agent's environment (it falls back there)."""
        desired = await self.planner.origin(record, service, self.owner(record))
        if desired is None:
            return None
        key = record_key(record)
        mark = f"origin:{record.uid}:{objects.spec_hash(desired['spec'])}"
        cached = self.state.origins.get(key)
        if cached is not None and self.state.recently_ensured(key, mark, self.settings.resync):
            return cached
        address = await origins.ensure_origin(self.client, record, desired)
        if address is not None:
            self.state.origins[key] = address
            self.state.mark_ensured(key, mark)
        return address

    def agent_state(self, record: TunnelRecord, status: TunnelStatus
                    ) -> tuple[TunnelStatus, float | None, bool]:
        """The AgentReady condition, when to look again, and whether the agent counts as alive:
        Ready, or not Ready for less than the grace period (none by default: the pod watch
        tells us at once, and the Service must not point at a pod that cannot answer)."""
        pods = self.state.agent_pods((record.namespace, record.agent_tunnel))
        ready = [p for p in pods if pod_ready(p)]
        chosen = (ready or pods)[0] if (ready or pods) else None
        status = replace(status, agent_pod=chosen["metadata"]["name"] if chosen else None)
        if ready:
            self.state.unready.pop(record_key(record), None)
            status = conditions.with_condition(status, AGENT_READY, "True", "PodReady",
                                               f"agent pod {status.agent_pod} is Ready")
            return status, None, True
        reason, message = (("PodNotReady", f"agent pod {status.agent_pod} is not Ready")
                           if chosen else ("PodMissing", "no agent pod exists"))
        status = conditions.with_condition(status, AGENT_READY, "False", reason, message)
        if self.settings.agent_grace <= 0:
            return status, None, False
        waited = (now() - self.unready_since(record, status)).total_seconds()
        grace_left = self.settings.agent_grace - waited
        return status, (grace_left + 0.05 if grace_left > 0 else None), grace_left > 0

    def unready_since(self, record: TunnelRecord, status: TunnelStatus) -> datetime:
        """When the agent pod stopped being Ready, as precisely as we know.

        Conditions store whole seconds, so a persisted lastTransitionTime may be up to a second
        early: this process's own observation wins; after a restart the persisted time (plus
        that second, erring towards keeping the tunnel) is all there is.
        """
        seen = self.state.unready.setdefault(record_key(record), now())
        condition = conditions.find(status, AGENT_READY)
        if condition is not None and condition.last_transition is not None:
            seen = min(seen, condition.last_transition + timedelta(seconds=1))
        # A report proves the agent was alive then, whatever our pod cache says: the grace
        # period never runs from before the agent's last word.
        heard = self.state.heard.get(record_key(record))
        return max(seen, heard) if heard is not None else seen

    async def converge_selector(self, record: TunnelRecord, service: selectors.ServiceView,
                                status: TunnelStatus, alive: bool = True
                                ) -> tuple[TunnelRecord, TunnelStatus]:
        """Swap or restore as the record and the agent's report want; returns the record (it
        may have been written) and the status to write."""
        tunnel_selector = objects.tunnel_labels(record)
        ours = service.tunnel == record.name
        switched = conditions.find(status, SWITCHED)
        overridden = switched is not None and switched.reason == conditions.CHANGED_BY_SOMEONE
        agent_connected = conditions.is_true(status, AGENT_CONNECTED)
        pod_is_ready = conditions.is_true(status, AGENT_READY)
        if ours and service.selector != tunnel_selector:
            # A person changed the selector while it pointed at the tunnel: theirs stays. The
            # condition that says so is written *before* our annotations go: it is what stops
            # the next reconcile from switching again, so it must survive any failure after.
            message = (f"the selector of Service {record.service} was changed by someone else "
                       f"while tunneled (now {service.selector}); it was left as they set it. "
                       f"The original selector was {service.original}. Reconnect to tunnel again.")
            status = conditions.with_condition(
                replace(status, connected=False, connected_since=None),
                SWITCHED, "False", conditions.CHANGED_BY_SOMEONE, message)
            record = await self.write_status(record, self.phase(status))
            outcome = await selectors.restore(self.client, service, record.name, tunnel_selector)
            if outcome == "retry":
                raise Retry(f"Service {record.service} changed meanwhile")
            self.metrics.switches.labels("kept").inc()
            await self.recorder.emit(record, "SelectorRestored", message, "Warning")
            return record, status
        keep = agent_connected and not overridden and alive
        if ours and not keep:
            outcome = await selectors.restore(self.client, service, record.name, tunnel_selector)
            if outcome == "retry":
                raise Retry(f"Service {record.service} changed meanwhile")
            self.metrics.switches.labels("restore").inc()
            why = ("" if alive or not agent_connected
                   else f" (the agent pod is not Ready: {conditions.message(status, AGENT_READY)})")
            await self.recorder.emit(record, "SelectorRestored",
                                     f"Service {record.service} selects {service.original} again"
                                     + why)
            return record, conditions.with_condition(
                replace(status, connected=False, connected_since=None),
                SWITCHED, "False", "AgentPodLost" if why else "Restored",
                f"Service {record.service} uses its own pods{why}")
        if not ours and keep and pod_is_ready:
            if not await selectors.switch(self.client, service, record.name, tunnel_selector):
                raise Retry(f"Service {record.service} changed meanwhile")
            self.metrics.switches.labels("switch").inc()
            await self.recorder.emit(record, "SelectorSwitched",
                                     f"Service {record.service} now selects the tunnel pod "
                                     f"(was {service.selector})")
            ours = True
        if ours:
            return record, conditions.with_condition(
                replace(status, connected=True, connected_since=status.connected_since or now()),
                SWITCHED, "True", "Switched",
                f"Service {record.service} sends its traffic to {record.client}")
        if overridden:
            return record, replace(status, connected=False, connected_since=None)
        reason = "AgentNotConnected" if not agent_connected else "AgentNotReady"
        return record, conditions.with_condition(
            replace(status, connected=False, connected_since=None), SWITCHED, "False", reason,
            "waiting for the agent to report a connected client" if not agent_connected
            else "waiting for the agent pod to be Ready")

    @staticmethod
    def phase(status: TunnelStatus) -> TunnelStatus:
        if status.connected:
            phase = "Connected"
        elif not conditions.is_true(status, AGENT_READY):
            phase = "Starting"
        elif conditions.find(status, AGENT_CONNECTED) is not None:
            phase = "Disconnected"
        else:
            phase = "Ready"
        return replace(status, phase=phase)  # type: ignore[arg-type]

    async def write_status(self, record: TunnelRecord, status: TunnelStatus,
                           failed: str | None = None) -> TunnelRecord:
        status = replace(status, observed_generation=record.generation)
        if status.to_dict() == record.status.to_dict():
            return record
        written = await self.store.replace_status(record.replace(status=status))
        self.state.put_record(written)
        if failed and record.status.phase != "Failed":
            await self.recorder.emit(record, "Failed", failed, "Warning")
        return written

    # -- refusals ------------------------------------------------------------------------------
    async def refusal(self, record: TunnelRecord, service: selectors.ServiceView | None
                      ) -> tuple[str, str] | None:
        if service is None:
            return ("ServiceNotFound", f"Service {record.service} does not exist in namespace "
                    f"{record.namespace}; create it, or delete this tunnel")
        if service.tunnel is not None and shared_service(service.tunnel) is not None \
                and service.tunnel != record.agent_tunnel:
            holders = await self.sharing.live(record.namespace, service.tunnel)
            if not holders:
                await self.release(service, service.tunnel)  # left by intercepts that are gone
                raise Retry(f"Service {record.service} was released from a stale shared agent")
            return ("ServiceAlreadyTunneled", sharing.busy_message(record, holders))
        if service.tunnel is not None and service.tunnel != record.agent_tunnel:
            holder = self.state.records.get((record.namespace, service.tunnel))
            if holder is None and await self.store.get(record.namespace, service.tunnel) is None:
                await self.release(service, service.tunnel)  # left by a tunnel that is gone
                raise Retry(f"Service {record.service} was released from a stale tunnel")
            return ("ServiceAlreadyTunneled", await self.held_message(record, service.tunnel))
        holders = [r for r in self.state.same_service(record) if not r.deleting or r == record]
        names = [r.name for r in holders]
        position = names.index(record.name) if record.name in names else len(names)
        older = [r for r in holders[:position] if not (r.shared and record.shared)]
        if older:
            # First made wins, by the same order for every record: two CLIs racing to create
            # conflicting records end with the later one refused, whatever the cache saw first.
            if not older[0].shared:
                return ("ServiceAlreadyTunneled", await self.held_message(record, older[0].name))
            return ("ServiceAlreadyTunneled", sharing.busy_message(
                record, [r for r in holders if r.shared and not r.deleting]))
        if service.selector is None:
            return ("ServiceHasNoSelector", f"Service {record.service} has no selector (an "
                    "ExternalName or selector-less Service); only a Service that selects pods "
                    "can be tunneled")
        return None

    async def held_message(self, record: TunnelRecord, tunnel: str) -> str:
        holder = self.state.records.get((record.namespace, tunnel))
        if holder is None:
            holder = await self.store.get(record.namespace, tunnel)
        who = holder.client if holder is not None else "an unknown client"
        return (f"Service {record.service} is already tunneled by {who} (tunnel {tunnel}); "
                "wait until they disconnect, or ask them to")

    # -- the ends of a record ------------------------------------------------------------------
    async def expire(self, record: TunnelRecord, ttl: float) -> None:
        await self.recorder.emit(
            record, "Disconnected",
            f"client {record.client} stopped renewing its lease (TTL {ttl:.0f}s); cleaning up",
            "Warning")
        await self.restore_for(record)
        with contextlib.suppress(NotFound):
            await self.store.delete(record.namespace, record.name)
        if record.shared:  # the others keep the shared agent; the last one takes it along
            await self.sharing.converge(record.namespace, record.agent_tunnel)

    async def finalize(self, record: TunnelRecord) -> None:
        if record.status.phase != "Terminating":
            status = replace(record.status, phase="Terminating", connected=False)
            record = await self.write_status(record, status)
        await self.restore_for(record)
        removed = [] if record.shared else await agents.remove_all(self.client, record)
        if record.shared:
            await self.sharing.converge(record.namespace, record.agent_tunnel)
        if FINALIZER in record.finalizers:
            await self.store.replace(
                record.replace(finalizers=tuple(f for f in record.finalizers if f != FINALIZER))
            )
        self.state.drop_record(record_key(record))
        log.info("tunnel.finalized", namespace=record.namespace, tunnel=record.name,
                 removed=len(removed))

    async def restore_for(self, record: TunnelRecord) -> None:
        if record.shared:
            return  # the shared agent's Service is restored with the last intercept
        service = await selectors.read(self.client, record.namespace, record.service)
        if service is not None and service.tunnel == record.name:
            outcome = await self.release(service, record.name)
            if outcome in ("restored", "changed-by-someone"):
                await self.recorder.emit(record, "SelectorRestored",
                                         f"Service {record.service} selects its own pods again")

    async def release(self, service: selectors.ServiceView, tunnel: str) -> str:
        selector = {objects.APP_LABEL: objects.APP_VALUE, objects.TUNNEL_LABEL: tunnel}
        outcome = await selectors.restore(self.client, service, tunnel, selector)
        if outcome == "retry":
            raise Retry(f"Service {service.name} changed meanwhile")
        if outcome in ("restored", "changed-by-someone"):
            self.metrics.switches.labels("restore").inc()
        return outcome

    async def release_orphans(self, namespace: str, tunnel: str) -> None:
        """A record vanished without its finalizer running: undo what it left behind."""
        for service in await selectors.annotated(self.client, (namespace,)):
            if service.tunnel == tunnel:
                await self.release(service, tunnel)
        listing = await self.client.get(agents.deployment_path(namespace),
                                        labelSelector=f"{objects.TUNNEL_LABEL}={tunnel}")
        for deployment in listing.get("items") or []:
            name = deployment["metadata"]["name"]
            for path in (agents.deployment_path(namespace, name),
                         agents.secret_path(namespace, name),
                         agents.account_path(namespace, name),
                         origins.origin_path(namespace, objects.origin_of(name))):
                await agents.delete_if_present(self.client, path)
