"""The subnet manager contract: where leases live (etcd v3, or Kubernetes Node objects).

flanneld's pkg/subnet Manager, shaped for one threaded daemon:

- the main loop calls ``network_config``, ``acquire_lease``, ``renew_lease`` and ``close``;
- ``watch_leases`` runs in its own thread and hands *batches* to ``sink`` — it never touches
  node state itself.  The main loop is the only place that changes the node.

A batch is a list of :class:`Event` (a peer's lease added/changed or removed) or one
:class:`Snapshot` (the complete current set, after the first list and after every re-list:
compaction, 410 Gone, a reconnect that could not resume).  Our own lease appears in the
stream like any other; the main loop recognises it (a REMOVED own lease = revoked).

Leases are :class:`cni_flannel.daemon.lease.Lease` — the one lease model of the daemon.
"""

from __future__ import annotations

import abc
import threading
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Union

from .lease import Lease, LeaseAttrs
from .netconf import NetConf

ADDED = "added"
REMOVED = "removed"


@dataclass(frozen=True)
class Event:
    type: str  # ADDED (new or changed) or REMOVED
    lease: Lease


@dataclass(frozen=True)
class Snapshot:
    """Every lease that exists now (own one included); replaces whatever was known."""

    leases: Sequence[Lease]


Batch = Union[List[Event], Snapshot]
Sink = Callable[[Batch], None]


class SubnetManager(abc.ABC):
    name = ""  # "etcd" or "kube": for logs and metrics

    @abc.abstractmethod
    def network_config(self) -> NetConf:
        """The cluster's net-conf (etcd: <prefix>/config; kube: --net-config-path).

        Raises ConfigError (unusable) or StoreUnavailable (retry)."""

    @abc.abstractmethod
    def acquire_lease(self, attrs: LeaseAttrs, previous: Optional[Lease] = None) -> Lease:
        """Our lease with ``attrs`` recorded on it.  ``previous`` is what the last subnet.env
        held (etcd tries that subnet before a free one).  Raises LeaseError / StoreError."""

    @abc.abstractmethod
    def renew_lease(self, lease: Lease) -> Lease:
        """Extend the lease (etcd: keep-alive / re-put with a fresh TTL); the renewed lease has
        the new ``expiration``.  Kube leases do not expire: returns ``lease``."""

    @abc.abstractmethod
    def watch_leases(self, sink: Sink, stop: threading.Event) -> None:
        """Block until ``stop`` is set: first a Snapshot, then batches of Events; reconnects
        with bounded backoff, resumes from the last revision / resourceVersion, re-lists (a new
        Snapshot) when it cannot resume.  Errors are logged and retried, never raised, except
        a DaemonError that makes the daemon stop."""

    def close(self) -> None:
        """Release connections (leases and keys stay: a restart must find them)."""
