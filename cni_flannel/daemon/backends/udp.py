"""The udp backend (flannel pkg/backend/udp): TUN flannel0 and a userspace forwarder.

Kernel state (reconciled like vxlan's): a TUN device ``flannel0`` (IFF_TUN|IFF_NO_PI),
address ``<subnet .0>/32``, MTU = underlay − 28, up, and one route for the whole Network
via flannel0.  Peers are not kernel state: each lease becomes a PeerTable entry
``<peer subnet> -> <peer PublicIP>:<Port>`` for the forwarder threads (cni_flannel.daemon.udp).

Lease attributes as upstream writes them: PublicIP (no BackendType), so peers with BackendType
"" (upstream udp nodes) or "udp" are both accepted.  IPv4 only.  One addition, where the
offload path runs: BackendData ``{"PartialChecksums": true}`` says "this node finishes TCP
checksums itself" (its flannel0 takes every TCP packet with NEEDS_CSUM), so our peers send
it TSO segments without summing their payloads (cni_flannel.daemon.udp.tso); upstream
ignores BackendData for udp and is always sent full checksums.  FLANNELD_UDP_OFFLOAD=0
leases exactly as upstream.

flannel0 lives while our fd is open: a stopped daemon takes it (and its route) with it, a
started one makes it again.  Deleted under us, it is recreated by ``reconcile`` / the next
``handle`` (the forwarder gets the new fd).  Routes into the Network via the external
interface (a previous host-gw run's) are removed: they would carry traffic past flannel0.

Beyond upstream: datagrams from addresses that are no peer's PublicIP, and inner packets not
for this node's subnet, are dropped; flannel0 gets accept_local=1 so the ICMP unreachable
answers (from its own address) are not dropped as martians, and IPv6 off; where the kernel
has them, TSO reads and writes on flannel0 with UDP GSO/GRO on the socket
(cni_flannel.daemon.udp.fastpath; FLANNELD_UDP_OFFLOAD=0 forces the plain path).  The
forwarding thread runs at nice -10 (FLANNELD_UDP_NICE) and is restarted if a bug kills it.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
from typing import Any, Dict, Iterable, List, Optional, Tuple

from cni_flannel.daemon.backends.apply import Scope
from cni_flannel.daemon.backends.base import Backend, Refusal
from cni_flannel.daemon.backends.plan import RouteEntry, State
from cni_flannel.daemon.errors import BackendError
from cni_flannel.daemon.lease import Lease, LeaseAttrs
from cni_flannel.daemon.udp import counters
from cni_flannel.daemon.udp.fastpath import TUN_OFFLOADS, OffloadForwarder, probe_socket
from cni_flannel.daemon.udp.forwarder import Forwarder, close_fd
from cni_flannel.daemon.udp.offload import SOL_UDP, UDP_GRO
from cni_flannel.daemon.udp.routes import PeerTable
from cni_flannel.net.errors import NetFailure
from cni_flannel.net.tun import open_tun
from cni_flannel.net.types import Link

log = logging.getLogger("cni_flannel.daemon.backends")

DEVICE = "flannel0"
DEFAULT_PORT = 8285
OVERHEAD = 28          # outer IPv4 20 + UDP 8
ACCEPTED_TYPES = ("udp", "")  # upstream's udp leases carry no BackendType
OFFLOAD_ENV = "FLANNELD_UDP_OFFLOAD"  # "0": the plain path even where the kernel has offloads
PARTIAL_KEY = "PartialChecksums"     # BackendData: TCP packets with partial checksums are welcome


def takes_partial_checksums(lease: Lease) -> bool:
    """Whether the peer's lease says it finishes TCP checksums itself (our offload path)."""
    data = lease.attrs.backend_data
    return isinstance(data, dict) and data.get(PARTIAL_KEY) is True


class UdpBackend(Backend):
    type = "udp"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.port = self.config.effective_port or DEFAULT_PORT
        nets = [n for n in self.networks if ipaddress.ip_network(n).version == 4]
        if len(nets) != 1:
            raise BackendError(f"udp backend needs exactly one IPv4 Network, got {list(self.networks) or 'none'}")
        self.network = nets[0]
        self.tun_fd = -1
        self.link: Optional[Link] = None
        self.sock: Optional[socket.socket] = None
        self.forwarder: Optional[Forwarder] = None
        self.offload = False  # TSO from flannel0 + UDP GSO/GRO (decided in setup)
        self._announced: Optional[bool] = None  # our lease says PartialChecksums (decided once)

    # --- setup ---------------------------------------------------------------------------
    def lease_attrs(self, public_ip: Any = None, public_ipv6: Any = None,
                    previous: Optional[LeaseAttrs] = None) -> LeaseAttrs:
        """PublicIP, as upstream's udp backend leases with, plus our PartialChecksums where the
        offload path will run (the lease is taken before flannel0 exists)."""
        return LeaseAttrs(public_ip=public_ip, backend_data=self._backend_data())

    def _backend_data(self) -> Optional[Dict[str, Any]]:
        if self._announced is None:
            self._announced = os.environ.get(OFFLOAD_ENV) != "0" and not _probe_new_socket()
        return {PARTIAL_KEY: True} if self._announced else None

    def setup(self, node: Lease) -> Dict[str, Any]:
        if node.backend_type not in ACCEPTED_TYPES:
            raise BackendError(f"own lease {node.name} has BackendType {node.backend_type!r}, "
                               "this backend is 'udp'")
        side = node.side(4)
        if side is None or not side.public_ip:
            raise BackendError(f"udp backend carries IPv4 only: own lease {node.name} needs a Subnet and PublicIP")
        if not side.subnet.subnet_of(ipaddress.IPv4Network(self.network)):
            raise BackendError(f"own subnet {side.subnet} is outside the Network {self.network}")
        # (base.setup insists on BackendType == "udp"; upstream's udp leases have none.)
        self.node = node
        self._resolve_ext()
        return self._setup_devices()

    def _setup_devices(self) -> Dict[str, Any]:
        assert self.node is not None
        side = self.node.side(4)
        assert side is not None
        local = self._bind_address(side.public_ip)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            _set_buffers(sock, 4 << 20)
            sock.bind((local, self.port))
        except OSError as exc:
            sock.close()
            raise BackendError(f"udp backend: cannot listen on {local}:{self.port}: "
                               f"{exc.strerror or exc}") from None
        why_not = "switched off (FLANNELD_UDP_OFFLOAD=0)" if os.environ.get(OFFLOAD_ENV) == "0" else probe_socket(sock)
        self.offload = gro_on = not why_not
        try:  # the socket first: a port in use leaves no flannel0 behind
            self._ensure_devices()
        except Exception:
            sock.close()
            raise
        if gro_on and not self.offload:  # flannel0 could not take offloads after all
            sock.setsockopt(SOL_UDP, UDP_GRO, 0)
            why_not = "unavailable on TUN devices here"
        self.sock = sock
        data = self._backend_data()
        cls = OffloadForwarder if self.offload else Forwarder
        self.forwarder = cls(self.tun_fd, sock, self._table(), str(side.subnet), self.mtu)
        if data and not self.offload:  # announced, but flannel0 took no offloads after all
            log.warning("udp: the lease says %s but flannel0 has no offloads: TCP checksums of "
                        "packets from peers are recomputed here (slow)", PARTIAL_KEY)
            self.forwarder.finish_tcp_checksums = True
        self.forwarder.start()
        counters.register(lambda: self.forwarder.counters if self.forwarder else None)
        how = ("offloads: UDP GSO/GRO, TSO on flannel0, partial TCP checksums to peers that take them"
               if self.offload else f"plain path (offloads {why_not or 'unavailable'})")
        log.info("udp: flannel0 up (%s, MTU %d), listening on %s:%d; %s", self.address, self.mtu,
                 side.public_ip, self.port, how)
        out: Dict[str, Any] = {"BackendType": ""}  # upstream's udp writes no BackendType
        if data:
            out["BackendData"] = data
        return out

    def _bind_address(self, public_ip: str) -> str:
        """The external interface's own address, as upstream binds (IfaceAddr): the PublicIP
        when the interface holds it, else its first IPv4 address (--public-ip behind NAT)."""
        assert self.ext is not None
        mine = [a.address for a in self.h.addresses(self.ext.index, 4) if a.scope == 0]
        return public_ip if public_ip in mine or not mine else mine[0]

    @property
    def address(self) -> str:
        assert self.node is not None and self.node.subnet
        return f"{ipaddress.IPv4Network(self.node.subnet).network_address}/32"

    @property
    def mtu(self) -> int:
        return self.underlay_mtu - OVERHEAD

    def _ensure_devices(self) -> None:
        if self._devices_intact() and self.link is not None:
            self.link = self._configure(self.link)
            return
        old, self.link = self.tun_fd, None
        fd = self._open_tun()
        try:
            link = self._configure(self.h.link(DEVICE))
        except NetFailure:
            close_fd(fd)
            raise
        self.tun_fd, self.link = fd, link
        if self.forwarder is not None:
            self.forwarder.set_tun(fd)   # closes the old fd once the loop has left it
        elif old >= 0:
            close_fd(old)

    def _open_tun(self) -> int:
        try:
            return self._open_tun_once()
        except NetFailure as exc:
            # flannel0 exists but is no TUN we can attach to (another kind of link, or a
            # TUN held by a dead daemon's leftover process): replace it once.
            if self.h.find_link(DEVICE) is None:
                raise
            log.warning("udp: %s; deleting the existing %s and creating it again", exc.msg, DEVICE)
            self.h.delete_link(DEVICE)
            return self._open_tun_once()

    def _open_tun_once(self) -> int:
        if self.offload:
            try:
                return open_tun(DEVICE, vnet_hdr=True, offload=TUN_OFFLOADS)
            except NetFailure as exc:
                if self.forwarder is not None or self.h.find_link(DEVICE) is not None:
                    raise  # running loops expect virtio headers; an existing link: replace it
                log.warning("udp: %s: TUN offloads unavailable, using the plain path", exc.msg)
                self.offload = False
        return open_tun(DEVICE)

    def _configure(self, link: Link) -> Link:
        h = self.h
        if link.mtu != self.mtu:
            h.set_mtu(link.index, self.mtu)
        have = [a for a in h.addresses(link.index, 4) if a.scope == 0]
        for addr in have:
            if addr.cidr != self.address:
                h.delete_address(link.index, addr.cidr)
        if self.address not in [a.cidr for a in have]:
            h.add_address(link.index, self.address)
        if not link.up:
            h.set_up(link.index)
        # Our ICMP net-unreachable answers come from flannel0's own address; without
        # accept_local the kernel drops them as martians (upstream's answers never arrive).
        # The device carries IPv4 only; the kernel's own IPv6 chatter on it (router
        # solicitations, MLD) would only be counted as drops.
        for key in (f"net/ipv4/conf/{DEVICE}/accept_local", f"net/ipv6/conf/{DEVICE}/disable_ipv6"):
            try:
                if h.sysctl_get(key).strip() != "1":
                    h.sysctl_set(key, "1")
            except (OSError, NetFailure) as exc:  # no IPv6 in this kernel: nothing to silence
                if "ipv4" in key:
                    raise
                log.debug("%s: %s", key, exc)
        return h.link(link.index)

    def _devices_intact(self) -> bool:
        if self.link is None or self.tun_fd < 0:
            return False
        link = self.h.find_link(DEVICE)
        return link is not None and link.index == self.link.index

    def close(self) -> None:
        if self.forwarder is not None:
            self.forwarder.log_counters(force=True)
            self.forwarder.stop()
            self.forwarder = None
        close_fd(self.tun_fd)
        self.tun_fd = -1
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        super().close()

    # --- peers ---------------------------------------------------------------------------
    def _accepts(self, backend_type: str) -> bool:
        return backend_type in ACCEPTED_TYPES

    def scope(self) -> Scope:
        """flannel0's routes, and routes into the Network through the external interface: what a
        previous host-gw (or DirectRouting) run left there is more specific than our Network
        route and would carry pods' traffic past flannel0, so reconcile removes it."""
        assert self.link is not None and self.ext is not None
        return Scope(devices={DEVICE: self.link.index}, ext=(self.ext.name, self.ext.index),
                     networks=(self.network,))

    def desired(self, peers: Iterable[Lease]) -> Tuple[State, List[Refusal]]:
        refused: List[Refusal] = []
        for lease in peers:
            side = lease.side(4)
            if side is None or not side.public_ip:
                refused.append((lease, "no IPv4 Subnet and PublicIP in its lease (udp carries IPv4 only)"))
        return State.of([RouteEntry(self.network, None, DEVICE)]), refused

    def _table(self) -> PeerTable:
        pairs, partial = [], []
        for lease in self.peers.values():
            side = lease.side(4)
            if side is not None and side.public_ip:
                pairs.append((str(side.subnet), side.public_ip))
                if takes_partial_checksums(lease):
                    partial.append(side.public_ip)
        return PeerTable(self.network, pairs, self.port, partial)

    def handle(self, events: Any) -> Any:
        try:
            return super().handle(events)
        finally:
            self._publish()

    def reconcile(self, peers: Optional[Iterable[Lease]] = None) -> Any:
        try:
            return super().reconcile(peers)
        finally:
            self._publish()

    def _publish(self) -> None:
        if self.forwarder is not None:
            self.forwarder.set_table(self._table())

    def counters(self) -> Dict[str, Any]:
        return self.forwarder.counters.as_dict() if self.forwarder else {}


def _probe_new_socket() -> str:
    """probe_socket on a throwaway socket: '' when UDP GSO/GRO are there, else why not."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        return probe_socket(sock)


def _set_buffers(sock: socket.socket, size: int) -> None:
    """Socket buffers of ``size`` (a burst of peers' packets must not overflow while the
    receiving thread waits for a CPU); the FORCE options pass net.core.[rw]mem_max as root."""
    for force, plain in ((33, socket.SO_RCVBUF), (32, socket.SO_SNDBUF)):  # SO_RCVBUFFORCE, SO_SNDBUFFORCE
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, size)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, plain, size)
