"""What vxlan and host-gw share: the peer set, lease events, reconcile, error reporting.

    be = VxlanBackend({"VNI": 1}, networks=["10.244.0.0/16"])
    attrs = be.lease_attrs(ip4, ip6)    # what to lease with (vxlan: the VtepMAC to keep)
    data = be.setup(own_lease)          # devices made; {"BackendType", "BackendData": {VtepMAC}}
    be.reconcile(all_current_peers)     # startup: stale entries removed, missing ones added
    be.handle([Event("added", lease)])  # then the lease watch's batches
    be.reconcile()                      # periodically: repairs a deleted or changed device

``handle`` plans from the peer set it remembers (no kernel dump per batch); ``reconcile``
plans from what the kernel actually holds.  Both return the applied :class:`Plan`, so
"applying the same state twice changes nothing" is an empty plan.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Any, Dict, Iterable, List, Optional, Sequence, Set, Tuple, Union

from cni_flannel.daemon.backends.apply import Scope, apply, read_state
from cni_flannel.daemon.backends.plan import Plan, State, diff
from cni_flannel.daemon.errors import BackendError
from cni_flannel.daemon.lease import Lease, LeaseAttrs
from cni_flannel.daemon.manager import ADDED, Event
from cni_flannel.daemon.netconf import Backend as BackendConfig
from cni_flannel.daemon.netconf import parse_backend
from cni_flannel.net.types import Link

log = logging.getLogger("cni_flannel.daemon.backends")

Refusal = Tuple[Lease, str]


class PeerError(BackendError):
    """Some peers could not be programmed (or were refused); ``.peers`` names them.  The
    daemon logs it and carries on with the others (the next resync retries)."""

    def __init__(self, msg: str, peers: Sequence[str]) -> None:
        super().__init__(msg)
        self.peers = list(peers)


class Backend:
    type = ""

    def __init__(self, config: Union[BackendConfig, Dict[str, Any], None] = None,
                 networks: Sequence[str] = (), ext_iface: Optional[str] = None,
                 handle: Any = None) -> None:
        self.config = config if isinstance(config, BackendConfig) else parse_backend(
            config, "Backend", default_type=self.type)
        self.networks = tuple(str(ipaddress.ip_network(n)) for n in networks)
        self.ext_iface = ext_iface
        self._handle = handle
        self.node: Optional[Lease] = None
        self.peers: Dict[str, Lease] = {}
        self.ext: Optional[Link] = None
        self.ext_cidrs: List[str] = []   # the external interface's address prefixes
        self.local_ips: Set[str] = set()  # every address this node held at setup
        self.underlay_mtu = 0

    # --- the netlink handle (one per backend, in the caller's namespace) ------------
    @property
    def h(self) -> Any:
        if self._handle is None:
            from cni_flannel.net.handle import Handle
            self._handle = Handle()
        return self._handle

    def close(self) -> None:
        if self._handle is not None and hasattr(self._handle, "close"):
            self._handle.close()
        self._handle = None

    # --- to be provided by a backend ----------------------------------------------------
    def _setup_devices(self) -> Dict[str, Any]:
        raise NotImplementedError

    def _ensure_devices(self) -> None:
        """Recreate what is missing or wrong (reconcile then re-adds every peer)."""

    def _devices_intact(self) -> bool:
        return True

    def devices_intact(self) -> bool:
        """Cheap: are our devices there as made? (A full reconcile reads every entry.)"""
        return self.node is None or self._devices_intact()

    def desired(self, peers: Iterable[Lease]) -> Tuple[State, List[Refusal]]:
        raise NotImplementedError

    def scope(self) -> Scope:
        raise NotImplementedError

    @property
    def mtu(self) -> int:
        """The MTU pods get (subnet.env's FLANNEL_MTU)."""
        raise NotImplementedError

    # --- setup -----------------------------------------------------------------------
    def lease_attrs(self, public_ip: Any = None, public_ipv6: Any = None,
                    previous: Optional[LeaseAttrs] = None) -> LeaseAttrs:
        """The attributes to acquire our lease with (before setup: the subnet is not known
        yet).  vxlan overrides this to record the VtepMAC it will keep (``previous``: what the
        store last held for this node, used when no device survived)."""
        return LeaseAttrs(public_ip=public_ip, public_ipv6=public_ipv6, backend_type=self.type)

    def setup(self, node: Lease) -> Dict[str, Any]:
        """Make this node's devices for ``node`` (its own lease); return its lease attributes."""
        if node.backend_type != self.type:
            raise BackendError(f"own lease {node.name} has BackendType {node.backend_type!r}, "
                               f"this backend is {self.type!r}")
        self.node = node
        self._resolve_ext()
        return self._setup_devices()

    def _resolve_ext(self) -> None:
        """The external interface: named, or the one holding the node's public IP."""
        assert self.node is not None
        publics = [s.public_ip for s in self.node.sides() if s.public_ip]
        every = self.h.addresses()
        self.local_ips = {a.interface.ip.compressed for a in every}
        addrs = [a for a in every if a.scope == 0]
        if self.ext_iface:
            self.ext = self.h.link(self.ext_iface)
        else:
            holder = next((a for a in addrs if a.address in publics), None)
            if holder is None:
                raise BackendError(f"no interface holds the node's public IP ({', '.join(publics) or 'none'}):"
                                   " name the external interface (--iface) or fix PublicIP")
            self.ext = self.h.link(holder.index)
        self.ext_cidrs = [str(a.interface.network) for a in addrs if a.index == self.ext.index]
        self.underlay_mtu = self.config.mtu or self.ext.mtu

    # --- peers -----------------------------------------------------------------------
    def _accepts(self, backend_type: str) -> bool:
        return backend_type == self.type

    def _wanted(self, lease: Lease) -> bool:
        if not self._accepts(lease.backend_type):
            log.warning("ignoring peer %s: BackendType %r is not %r", lease.name,
                        lease.backend_type, self.type)
            return False
        if self._own(lease):
            return False  # our own lease, as the watch reports it too
        overlap = self._overlaps_own(lease)
        if overlap:
            # A part of our subnet (or a network holding it) claimed by a peer: its route
            # would take our own pods' traffic away from the bridge (a /25 of our /24 is more
            # specific).  Never a legitimate lease; upstream only skips an exact match.
            log.warning("refusing peer %s: its subnet overlaps this node's own subnet %s; "
                        "nothing is programmed for it", lease.name, overlap)
            return False
        mine = self._ours(lease)
        if mine:
            # Another subnet at one of our addresses: a stale lease of this node's (a
            # restart that took a new subnet) or a peer lying.  Its routes/FDB entries would
            # send that subnet's traffic to ourselves (upstream only skips our own subnet).
            log.warning("refusing peer %s: its public IP %s is this node's own address; "
                        "nothing is programmed for it", lease.name, mine)
            return False
        return True

    def _ours(self, lease: Lease) -> str:
        """The first public IP of ``lease`` (any family) that is an address of this node, or ''."""
        mine = set(self.local_ips)
        if self.node is not None:
            mine.update(s.public_ip for s in self.node.sides() if s.public_ip)
        for side in lease.sides():
            if not side.public_ip:
                continue
            ip = ipaddress.ip_address(side.public_ip)
            if str(ip) in mine or ip.is_loopback or ip.is_unspecified:
                return str(ip)
        return ""

    def _overlaps_own(self, lease: Lease) -> str:
        """Our subnet that a side of ``lease`` overlaps without being it, or ''."""
        for own in (self.node.sides() if self.node else ()):
            for side in lease.sides():
                if side.subnet != own.subnet and side.subnet.version == own.subnet.version \
                        and side.subnet.overlaps(own.subnet):
                    return str(own.subnet)
        return ""

    def _own(self, lease: Lease) -> bool:
        own = {str(s.subnet) for s in self.node.sides()} if self.node else set()
        return bool(own & {str(s.subnet) for s in lease.sides()})

    def handle(self, events: Sequence[Event]) -> Plan:
        """Apply one batch of lease events."""
        self._require_setup()
        before: Dict[str, Lease] = {}   # the touched keys as they were (absent: new)
        touched: List[str] = []
        for ev in events:
            if ev.lease.key not in touched:
                touched.append(ev.lease.key)
                if ev.lease.key in self.peers:
                    before[ev.lease.key] = self.peers[ev.lease.key]
            if ev.type == ADDED:
                if self._wanted(ev.lease):
                    self.peers[ev.lease.key] = ev.lease
                else:  # the key's new value is refused: what its old one made goes too
                    self.peers.pop(ev.lease.key, None)
                continue
            # A removal names the key only (etcd's DELETE has no value): drop what we knew by
            # that key; one we never saw added still removes what it describes, if anything.
            if self._own(ev.lease):
                continue
            known = self.peers.pop(ev.lease.key, None)
            if known is None and ev.lease.backend_type == self.type:
                before.setdefault(ev.lease.key, ev.lease)
        if not self._devices_intact():
            log.warning("%s: a device is gone or changed; recreating it and re-adding all peers", self.type)
            return self.reconcile()
        # Entries belong to one peer each, so only the touched peers need planning: a batch
        # costs what it changes, not the size of the cluster.
        old, _ = self.desired(before.values())
        new, refused = self.desired(self.peers[k] for k in touched if k in self.peers)
        return self._apply(diff(new, old), refused)

    def reconcile(self, peers: Optional[Iterable[Lease]] = None) -> Plan:
        """Make the kernel hold exactly the entries of ``peers`` (default: the known peers)."""
        self._require_setup()
        if peers is not None:
            self.peers = {p.key: p for p in peers if self._wanted(p)}
        self._ensure_devices()
        desired, refused = self.desired(self.peers.values())
        return self._apply(diff(desired, read_state(self.h, self.scope())), refused)

    def _owned_networks(self) -> Tuple[str, ...]:
        """Where routes through the external interface are ours: the cluster Network, or
        without one, at least the subnets of the peers we know."""
        return self.networks or tuple(sorted({str(s.subnet) for p in self.peers.values()
                                              for s in p.sides()}))

    def _require_setup(self) -> None:
        if self.node is None:
            raise BackendError(f"{self.type} backend: setup(own lease) must come first")

    def _apply(self, plan: Plan, refused: List[Refusal]) -> Plan:
        failed = apply(self.h, plan, self.scope())
        problems = [f"peer {lease.name}: {why}" for lease, why in refused]
        problems += [f"peer {e.peer or '?'}: {exc.msg}" for e, exc in failed]
        if problems:
            names = [lease.name for lease, _ in refused] + [e.peer for e, _ in failed]
            raise PeerError(f"{self.type}: " + "; ".join(problems), sorted(set(names)))
        return plan
