"""flanneld's main loop: lease a subnet, program the node, keep it right.

Start-up, in upstream's order (main.go):

    network config -> preflight -> external interface -> lease (with the backend's attributes:
    vxlan keeps the VtepMAC of the device that exists) -> masquerade + forward rules (and the
    other firewall mode's leftovers cleaned) -> backend devices -> subnet.env -> ready

then one loop over a queue:

    Snapshot          -> backend.reconcile(peers)   (stale entries removed: flannel#2554)
    [Event, ...]      -> backend.handle(batch)      (own lease REMOVED -> "revoked", exit 1)
    every --iptables-resync seconds -> rules checked/re-applied, devices and entries reconciled
    lease.renew_at(margin) -> renew_lease (retried every minute on failure)

Threads, not asyncio: the etcd and Kubernetes clients are synchronous libraries, so each
watch runs in its own thread and hands batches to one queue.  The main thread is the only
one that changes the node (netlink, iptables, subnet.env): no locks around kernel state, no
interleaved half-applied plans, and a batch that arrives during a resync simply waits.
The health server thread only reads two booleans and the metrics registry.

SIGTERM/SIGINT stop the loop and exit 0 removing nothing — routes, VTEPs, rules and the lease
stay, so pods keep working across a restart (as upstream).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, List, Optional, Sequence

from . import backends, iface, preflight, subnet_file
from .errors import BackendError, DaemonError, LeaseRevoked, StoreError, StoreUnavailable
from .health import Status
from .lease import Lease
from .manager import ADDED, REMOVED, Event, Snapshot, SubnetManager
from .metrics import METRICS, Metrics
from .netconf import NetConf

log = logging.getLogger("flanneld")

_STOP = object()
BACKOFF_MAX = 30.0
FULL_RECONCILE = 10.0  # seconds between full kernel reconciles (upstream host-gw: 10 s)


@dataclass
class Options:
    subnet_file: str = subnet_file.DEFAULT_PATH
    ip_masq: bool = False
    random_fully: bool = True
    forward_rules: bool = True
    resync: float = 5.0                 # --iptables-resync (seconds)
    renew_margin: float = 3600.0        # --subnet-lease-renew-margin (seconds here)
    renew_retry: float = 60.0           # upstream retries a failed renewal every minute
    startup_timeout: float = 300.0      # give up on an unreachable store after this long
    iface: iface.Request = field(default_factory=iface.Request)


class Stopped(Exception):
    """A signal arrived while waiting (start-up retries): exit 0."""


def _kind(entry: Any) -> str:
    return {"Neigh": "neighbour", "Fdb": "fdb", "RouteEntry": "route"}.get(type(entry).__name__, "other")


@contextlib.contextmanager
def translated(what: str) -> Iterator[None]:
    """Netlink and firewall failures (the plugins' CNI error tree) -> BackendError, here only."""
    from cni_flannel.cni.errors import CNIError
    try:
        yield
    except CNIError as exc:
        raise BackendError(f"{what}: {exc}") from None


class Daemon:
    def __init__(self, opts: Options, manager: SubnetManager, handle: Any = None,
                 probe: Optional[preflight.Probe] = None, masq_factory: Optional[Callable] = None,
                 metrics: Metrics = METRICS, status: Optional[Status] = None,
                 read_host: Callable[[Any], iface.Host] = iface.read_host) -> None:
        self.opts = opts
        self.read_host = read_host
        self.manager = manager
        self._handle = handle
        self.probe = probe or preflight.system_probe()
        self.masq_factory = masq_factory
        self.metrics = metrics
        self.status = status or Status()
        self.queue: "queue.Queue[Any]" = queue.Queue()
        self.stop = threading.Event()
        self.conf: Optional[NetConf] = None
        self.lease: Optional[Lease] = None
        self.backend: Any = None
        self.masq: Any = None
        self._watch_stop = threading.Event()
        self._next_full = 0.0

    # --- control ---------------------------------------------------------------------
    def request_stop(self) -> None:
        """From a signal handler: finish the current step, then exit 0."""
        self.stop.set()
        self.queue.put(_STOP)
        if not self.status.ready:
            self.manager.close()  # interrupts a blocking start-up call (kube: waiting for a podCIDR)

    @property
    def h(self) -> Any:
        if self._handle is None:
            from cni_flannel.net.handle import Handle
            self._handle = Handle()
        return self._handle

    # --- start-up --------------------------------------------------------------------
    def start(self) -> None:
        """Everything up to ready; raises DaemonError (nothing half-written) or Stopped."""
        o = self.opts
        conf = self.conf = self._retry("reading the network config", self.manager.network_config)
        if conf.unknown_keys:
            log.warning("network config: ignoring unknown keys %s", ", ".join(conf.unknown_keys))
        for note in preflight.check(conf, self.probe):
            log.info("preflight: %s", note)
        req = o.iface
        req = iface.Request(req.ifaces, req.regexes, req.can_reach, req.public_ip, req.public_ipv6,
                            ipv4=conf.enable_ipv4, ipv6=conf.enable_ipv6)
        with translated("reading interfaces"):
            choice = iface.choose(self.read_host(self.h), req)
        log.info("using interface %s (%s), public IP %s%s", choice.iface.name, choice.how,
                 choice.public_ip, f", public IPv6 {choice.public_ipv6}" if choice.public_ipv6 else "")
        networks = [str(p.network) for p in conf.pools]
        self.backend = backends.new(conf.backend.type, conf.backend, networks=networks,
                                    ext_iface=choice.iface.name, handle=self.h)
        public_ip, public_ipv6 = choice.public_ip, choice.public_ipv6
        stored = getattr(self.manager, "stored_public_ips", None)  # kube: node-public-ip annotations win
        if stored is not None:
            ip4, ip6 = stored()
            public_ip = ip4 if ip4 is not None and conf.enable_ipv4 else public_ip
            public_ipv6 = ip6 if ip6 is not None and conf.enable_ipv6 else public_ipv6
        previous_attrs = getattr(self.manager, "previous_attrs", None)  # kube: the VtepMAC we had
        with translated(f"{conf.backend.type} backend"):
            attrs = self.backend.lease_attrs(public_ip, public_ipv6,
                                             previous=previous_attrs() if previous_attrs else None)
        previous = self._previous_lease()
        lease = self._retry("acquiring a lease", lambda: self.manager.acquire_lease(attrs, previous))
        self._set_lease(lease)
        log.info("acquired lease %s", lease.name)
        self.masq = self._masq(conf, lease)
        with translated("masquerade/forward rules"):
            self.masq.reconcile()
        with translated(f"{conf.backend.type} backend"):
            self.backend.setup(lease)
        env = subnet_file.env_for(conf, lease.subnet, lease.ipv6_subnet, self.backend.mtu, o.ip_masq)
        try:
            subnet_file.write(env, o.subnet_file)
        except OSError as exc:
            raise DaemonError(f"cannot write {o.subnet_file}: {exc.strerror or exc}") from None
        log.info("wrote %s (MTU %d)", o.subnet_file, self.backend.mtu)
        self.status.ready = True
        self.metrics.ready.set(1)
        mark = getattr(self.manager, "mark_network_available", None)  # kube: NetworkUnavailable=False
        if mark is not None:
            mark()

    def _retry(self, what: str, fn: Callable[[], Any]) -> Any:
        """fn() retried on StoreUnavailable with backoff 1, 2, 4 .. 30 s, for at most
        --startup-timeout (then the last error, with how long we tried)."""
        start = time.monotonic()
        delay = 1.0
        while True:
            try:
                return fn()
            except StoreUnavailable as exc:
                self.metrics.store_errors.labels(op=what.split()[0]).inc()
                waited = time.monotonic() - start
                if waited + delay > self.opts.startup_timeout:
                    raise StoreUnavailable(f"{what}: {exc.msg} (gave up after {waited:.0f}s)") from None
                log.warning("%s: %s; retrying in %.0fs", what, exc.msg, delay)
                if self.stop.wait(delay):
                    raise Stopped() from None
                delay = min(delay * 2, BACKOFF_MAX)

    def _previous_lease(self) -> Optional[Lease]:
        """The subnet(s) the last subnet.env named: etcd tries them before a free one."""
        from cni_flannel.flannel import subnet_env
        try:
            env = subnet_env.load(self.opts.subnet_file)
        except Exception:  # noqa: BLE001 - absent or unreadable: no hint, not an error
            return None
        v4 = next((s for s in env.subnets if s.version == 4), None)
        v6 = next((s for s in env.subnets if s.version == 6), None)
        if v4 is None and v6 is None:
            return None
        return Lease(subnet=v4, ipv6_subnet=v6)  # type: ignore[arg-type]

    def _masq(self, conf: NetConf, lease: Lease) -> Any:
        from .masq import MasqConfig, MasqManager
        subnets = tuple(str(s.subnet) for s in lease.sides())
        try:
            cfg = MasqConfig(networks=tuple(str(p.network) for p in conf.pools), subnets=subnets,
                             ip_masq=self.opts.ip_masq, forward=self.opts.forward_rules,
                             enable_nftables=conf.enable_nftables, random_fully=self.opts.random_fully)
        except Exception as exc:  # the plugins' InvalidConfig: lease and config disagree
            raise BackendError(f"masquerade rules: {exc}") from None
        if self.masq_factory is not None:
            return self.masq_factory(cfg)
        with translated("masquerade/forward rules"):
            return MasqManager(cfg)

    def _set_lease(self, lease: Lease) -> None:
        self.lease = lease
        self.metrics.lease_expiry.set(lease.expiration or 0)

    # --- the loop --------------------------------------------------------------------
    def run(self) -> int:
        """start(), then serve the queue until a signal (0) or a fatal DaemonError (raised)."""
        try:
            self.start()
        except Stopped:
            return 0
        thread = threading.Thread(target=self._watch, name="lease-watch", daemon=True)
        thread.start()
        try:
            return self._loop()
        finally:
            self._watch_stop.set()
            self.status.alive = False
            self.manager.close()

    def _watch(self) -> None:
        try:
            self.manager.watch_leases(self.queue.put, self._watch_stop)
        except DaemonError as exc:
            self.queue.put(exc)
        except Exception as exc:  # noqa: BLE001 - a bug or an untranslated library error
            self.queue.put(StoreError(f"lease watch stopped: {type(exc).__name__}: {exc}"))

    def _loop(self) -> int:
        now = time.monotonic()
        next_resync = now + self.opts.resync
        next_renew = self._renew_deadline()
        while not self.stop.is_set():
            wake = min(next_resync, next_renew)
            try:
                item = self.queue.get(timeout=max(0.0, wake - time.monotonic()))
            except queue.Empty:
                item = None
            if item is _STOP:
                break
            if isinstance(item, BaseException):
                raise item
            if isinstance(item, Snapshot):
                self._snapshot(item.leases)
            elif item:
                self._events(item)
            now = time.monotonic()
            if now >= next_resync:
                self.resync()
                next_resync = time.monotonic() + self.opts.resync
            if now >= next_renew:
                next_renew = self._renew()
        log.info("stopping: leaving routes, devices, rules and the lease in place")
        return 0

    def _own(self, lease: Lease) -> bool:
        return self.lease is not None and lease.key == self.lease.key

    def _snapshot(self, leases: Sequence[Lease]) -> None:
        if self.lease is not None and not any(self._own(l) for l in leases):
            raise LeaseRevoked(f"Lease has been revoked: {self.lease.key} is gone from the store")
        peers = [l for l in leases if not self._own(l)]
        self._program("reconcile", lambda: self.backend.reconcile(peers))
        self._next_full = time.monotonic() + FULL_RECONCILE  # that was a full one
        log.info("programmed %d peers from a full listing", len(self.backend.peers))

    def _events(self, batch: List[Event]) -> None:
        for ev in batch:
            self.metrics.events.labels(type=ev.type).inc()
            if ev.type == REMOVED and self._own(ev.lease):
                raise LeaseRevoked(f"Lease has been revoked: {ev.lease.key} was deleted or expired")
        peers = [ev for ev in batch if not self._own(ev.lease)]
        for ev in peers:  # upstream logs every peer change at info too
            if ev.type == ADDED:
                log.info("peer %s added", ev.lease.name)
            else:
                log.info("peer %s removed", ev.lease.key)
        if peers:
            self._program("events", lambda: self.backend.handle(peers))

    def _program(self, what: str, fn: Callable[[], Any]) -> None:
        """Apply a backend plan; a peer that cannot be programmed is logged (the next resync
        retries), a netlink failure too — neither stops the others."""
        from .backends.base import PeerError
        try:
            with translated(f"{self.backend.type} {what}"):
                plan = fn()
        except PeerError as exc:
            log.warning("%s", exc.msg)
        except BackendError as exc:
            log.error("%s (retrying at the next resync)", exc.msg)
        else:
            for action, entries in (("delete", plan.delete), ("add", plan.add)):
                counts: dict = {}
                for e in entries:
                    counts[_kind(e)] = counts.get(_kind(e), 0) + 1
                for kind, n in counts.items():
                    self.metrics.reconcile_actions.labels(kind=kind, action=action).inc(n)
            if len(plan.delete) + len(plan.add) > 20:
                log.info("%s: %d entries deleted, %d added", what, len(plan.delete), len(plan.add))
        self.metrics.peers.set(len(self.backend.peers))

    def resync(self) -> None:
        """Rules checked (re-applied when anything is missing: a flushed FLANNEL-POSTRTG) and
        the backend reconciled against the kernel (a deleted flannel.1 recreated with peers)."""
        started = time.monotonic()
        try:
            with translated("checking masquerade/forward rules"):
                problems = self.masq.check()
                if problems:
                    log.warning("rules drifted (%s); re-applying", "; ".join(problems[:3]))
                    self.masq.apply()
                    self.metrics.reconcile_actions.labels(kind="rules", action="add").inc()
        except BackendError as exc:
            log.error("%s (retrying at the next resync)", exc.msg)
        # Devices every resync (a deleted flannel.1 is back within seconds); every entry in the
        # kernel at most every FULL_RECONCILE seconds (a dump of 2,000 peers costs ~1 s of CPU).
        try:
            with translated("checking devices"):
                intact = self.backend.devices_intact()
        except BackendError as exc:
            log.error("%s", exc.msg)
            intact = False
        if not intact or started >= self._next_full:
            if not intact:
                log.warning("%s: a device is gone or changed; recreating it with every peer", self.backend.type)
            self._program("resync", lambda: self.backend.reconcile())
            self._next_full = time.monotonic() + FULL_RECONCILE
        self.metrics.resync_seconds.observe(time.monotonic() - started)

    def _renew_deadline(self) -> float:
        """Monotonic time to renew at: margin before expiry, but never sooner than half the
        remaining time (a short test TTL below the margin must not renew in a busy loop)."""
        lease = self.lease
        if lease is None or lease.expiration is None:
            return float("inf")
        remaining = lease.expiration - time.time()
        wait = max(remaining - self.opts.renew_margin, remaining / 2, 0.5)
        return time.monotonic() + wait

    def _renew(self) -> float:
        assert self.lease is not None
        try:
            self._set_lease(self.manager.renew_lease(self.lease))
        except LeaseRevoked:
            raise
        except StoreError as exc:
            self.metrics.store_errors.labels(op="renew").inc()
            log.warning("renewing lease %s: %s; retrying in %.0fs", self.lease.key, exc.msg,
                        self.opts.renew_retry)
            return time.monotonic() + self.opts.renew_retry
        log.info("renewed lease %s", self.lease.key)
        return self._renew_deadline()
