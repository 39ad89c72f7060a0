"""flanneld's Prometheus metrics (upstream has none): one registry the whole daemon adds to.

    from cni_flannel.daemon.metrics import METRICS
    METRICS.events.labels(type="added").inc(len(batch))

Another part (the udp backend) registers its own collectors on ``METRICS.registry``.  Served
as text on ``/metrics`` by :mod:`cni_flannel.daemon.health`.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.lease_expiry = Gauge("flannel_lease_expiry_timestamp_seconds",
                                  "When our subnet lease expires unless renewed (unix time; 0: never)",
                                  registry=r)
        self.peers = Gauge("flannel_peers", "Peer leases the backend programs", registry=r)
        self.reconcile_actions = Counter("flannel_reconcile_actions",
                                         "Kernel entries and rule sets added or deleted to match the leases",
                                         ["kind", "action"], registry=r)
        self.store_errors = Counter("flannel_store_errors",
                                    "Failed requests to the lease store (etcd / Kubernetes API)",
                                    ["op"], registry=r)
        self.events = Counter("flannel_lease_events", "Lease events handled", ["type"], registry=r)
        self.resync_seconds = Histogram("flannel_resync_duration_seconds",
                                        "Time for one periodic resync of rules and devices",
                                        buckets=(0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30), registry=r)
        self.ready = Gauge("flannel_ready", "1 once rules and subnet.env are in place", registry=r)


METRICS = Metrics()
