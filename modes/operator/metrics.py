"""Prometheus metrics, in a registry per operator instance so two operators in one test process
(leader election tests) never share counters."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from kubetunnel.records import TunnelRecord

PHASES = ("Pending", "Starting", "Ready", "Connected", "Disconnected", "Failed", "Terminating")


class _TunnelsByPhase(Collector):
    """Computed at scrape time from the operator's record cache: never out of date."""

    def __init__(self, records: Callable[[], Iterable[TunnelRecord]]) -> None:
        self._records = records

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "kubetunnel_tunnels", "Tunnel records by phase.", labels=["phase"]
        )
        counts = dict.fromkeys(PHASES, 0)
        for record in self._records():
            counts[record.status.phase] = counts.get(record.status.phase, 0) + 1
        for phase, count in counts.items():
            family.add_metric([phase], count)
        yield family


class Metrics:
    def __init__(self, records: Callable[[], Iterable[TunnelRecord]]) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_TunnelsByPhase(records))
        self.reports = Counter(
            "kubetunnel_reports", "Status reports from agents, by outcome.",
            ["result"], registry=self.registry,
        )
        self.switches = Counter(
            "kubetunnel_selector_switches", "Service selector changes by direction.",
            ["direction"], registry=self.registry,
        )
        self.reconcile_errors = Counter(
            "kubetunnel_reconcile_errors", "Reconciles that failed and were retried.",
            registry=self.registry,
        )
        self.reconcile_seconds = Histogram(
            "kubetunnel_reconcile_duration_seconds", "Time to reconcile one record.",
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
        )
