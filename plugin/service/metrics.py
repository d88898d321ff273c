"""Prometheus metrics of the running node (https://prometheus.github.io/client_python/).

Served at ``http://[metrics] host:port/metrics`` when ``[metrics] port`` is set (off by default,
loopback by default). Every figure except the two receive counters is read from ``state_dir`` when
scraped, so it is true whichever process or machine did the work (forked workers, ``serve --worker``
on other hosts):

=====================================================  =============================================
``borderphase_instances_received_total``               instances stored and acknowledged (0x0000)
``borderphase_instances_refused_total{reason}``        refused C-STOREs: ``disk_full`` (0xA700 below
                                                       ``[node] min_free_mb`` or on ENOSPC), ``store_error``
``borderphase_studies{state}``                         studies by state (as ``borderphase status``)
``borderphase_queue_depth{kind}``                      queued tasks: ``ready``, ``scheduled`` (retries)
``borderphase_outbox_pending``                         deliveries not yet accepted
``borderphase_outbox_oldest_age_seconds``              age of the oldest of them (0 when none)
``borderphase_disk_free_bytes`` / ``_total_bytes``     the file system of ``state_dir``
``borderphase_disk_reserve_present``                   1 when the disk reserve file is in place
``borderphase_retention_removed_studies_total{reason}``  studies removed by retention (``age``/``watermark``)
``borderphase_analysis_duration_seconds``              histogram: one analysis (worker start -> result)
``borderphase_analysis_latency_seconds``               histogram: study complete -> result recorded
``borderphase_delivery_latency_seconds``               histogram: result ready -> accepted by the destination
=====================================================  =============================================

The histograms observe each version / delivery once, when a scrape (or the node's periodic pass)
first sees its record; what was already finished when the node started is not observed.
"""
from __future__ import annotations

import logging
import threading
import time

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily

from plugin.service.diskspace import DiskReserve, disk_usage
from plugin.service.spool import read_json
from plugin.service.state import StateLayout

LOG = logging.getLogger(__name__)
_LATENCY_BUCKETS_S = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 24 * 3600)


class _StateCollector:
    """Gauges read from ``state_dir`` at scrape time; first brings the histograms up to date."""

    def __init__(self, metrics: "NodeMetrics"):
        self.metrics = metrics

    def describe(self):
        return []  # nothing to check at registration; collect() reads state_dir

    def collect(self):
        m = self.metrics
        m.observe_finished()
        from plugin.service.status import collect as collect_status
        doc = collect_status(m.layout.root)
        g = GaugeMetricFamily("borderphase_studies", "Studies by state (as borderphase status shows them)",
                              labels=["state"])
        for state, n in sorted(doc["counts"].items()):
            g.add_metric([state], n)
        yield g
        if m.queue_depth is not None:
            q = GaugeMetricFamily("borderphase_queue_depth", "Tasks in the work queue", labels=["kind"])
            try:
                ready, scheduled = m.queue_depth()
                q.add_metric(["ready"], ready)
                q.add_metric(["scheduled"], scheduled)
            except Exception as exc:  # queue unreachable or the disk full: leave the gauge out
                LOG.debug("metrics: queue depth unavailable: %s", exc)
            yield q
        pending = doc["outbox"]["pending"]
        yield GaugeMetricFamily("borderphase_outbox_pending", "Deliveries not yet accepted", value=len(pending))
        now = time.time()
        ages = [now - float(e["created"]) for e in pending if e.get("created")]
        yield GaugeMetricFamily("borderphase_outbox_oldest_age_seconds",
                                "Age of the oldest delivery not yet accepted (0: none)", value=max(ages, default=0.0))
        usage = disk_usage(m.layout.root)
        yield GaugeMetricFamily("borderphase_disk_free_bytes", "Free bytes on the state_dir file system",
                                value=usage.free_bytes)
        yield GaugeMetricFamily("borderphase_disk_total_bytes", "Size of the state_dir file system",
                                value=usage.total_bytes)
        yield GaugeMetricFamily("borderphase_disk_reserve_present", "1 when the disk reserve file is in place",
                                value=1.0 if m.reserve is None or m.reserve.present else 0.0)


class NodeMetrics:
    def __init__(self, layout: StateLayout, *, queue_depth=None, reserve: DiskReserve | None = None):
        """``queue_depth``: a function returning (ready, scheduled) task counts."""
        self.layout = layout
        self.queue_depth = queue_depth
        self.reserve = reserve
        self.registry = CollectorRegistry()
        self.registry.register(_StateCollector(self))  # first: it updates the histograms below
        r = self.registry
        self.received = Counter("borderphase_instances_received", "Instances stored and acknowledged", registry=r)
        self.refused = Counter("borderphase_instances_refused", "C-STOREs refused, by reason", ["reason"], registry=r)
        self.removed = Counter("borderphase_retention_removed_studies", "Studies removed by retention, by reason",
                               ["reason"], registry=r)
        self.analysis_duration = Histogram("borderphase_analysis_duration_seconds", "One analysis, start to result",
                                           buckets=_LATENCY_BUCKETS_S, registry=r)
        self.analysis_latency = Histogram("borderphase_analysis_latency_seconds",
                                          "Study complete (version created) to result recorded",
                                          buckets=_LATENCY_BUCKETS_S, registry=r)
        self.delivery_latency = Histogram("borderphase_delivery_latency_seconds",
                                          "Result ready (outbox entry created) to accepted by the destination",
                                          buckets=_LATENCY_BUCKETS_S, registry=r)
        for reason in ("disk_full", "store_error"):
            self.refused.labels(reason)
        self._lock = threading.Lock()
        self._seen_results: set[tuple[str, int]] = set()
        self._seen_sent: set[str] = set()
        self._server = None
        self.observe_finished(observe=False)  # what was done before this node started is not observed

    def observe_finished(self, observe: bool = True) -> None:
        """Observe the latency of every result record and delivery not seen yet."""
        layout = self.layout
        with self._lock:
            for study in layout.studies():
                for v in layout.versions(study):
                    if (study, v) in self._seen_results:
                        continue
                    result = layout.result(study, v)
                    if result is None:
                        continue
                    self._seen_results.add((study, v))
                    if not observe or result.get("state") not in ("analysed", "failed"):
                        continue
                    finished = float(result.get("finished") or 0)
                    if result.get("started"):
                        self.analysis_duration.observe(max(0.0, finished - float(result["started"])))
                    created = (layout.manifest(study, v) or {}).get("created")
                    if created:
                        self.analysis_latency.observe(max(0.0, finished - float(created)))
            if layout.outbox_sent.is_dir():
                for p in layout.outbox_sent.glob("*.json"):
                    if p.name in self._seen_sent:
                        continue
                    self._seen_sent.add(p.name)
                    entry = read_json(p) if observe else None
                    if entry and entry.get("delivered") and entry.get("created"):
                        self.delivery_latency.observe(max(0.0, float(entry["delivered"]) - float(entry["created"])))

    def forget_study(self, study: str) -> None:
        """Retention removed ``study``: its records may come back as new ones."""
        with self._lock:
            self._seen_results = {k for k in self._seen_results if k[0] != study}
            self._seen_sent = {n for n in self._seen_sent if not n.startswith(f"{study}-v")}

    def serve(self, host: str, port: int) -> int:
        """Start the HTTP endpoint; returns the port it listens on."""
        self._server, _thread = start_http_server(port, addr=host, registry=self.registry)
        bound = self._server.server_address[1]
        LOG.info("metrics on http://%s:%d/metrics", host, bound)
        return bound

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
