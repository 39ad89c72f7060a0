"""The udp backend's data plane: a thread moving packets between flannel0 and UDP.

    fwd = Forwarder(tun_fd, sock, table, own_subnet="10.244.1.0/24", mtu=1472)
    fwd.start()
    fwd.set_table(new_table)     # lease changes: swapped atomically, no lock in the hot path
    fwd.set_tun(new_fd)          # flannel0 was recreated
    fwd.stop()

``tun_to_udp``: read a packet from flannel0, find the peer of its destination (PeerTable),
decrement the TTL, send it as one datagram to <peer PublicIP>:<Port>; a destination in the
Network without a lease gets ICMP net unreachable written back into flannel0.
``udp_to_tun``: receive a datagram, accept it only from a peer's PublicIP, as one
well-formed IPv4 packet for this node's subnet; decrement the TTL; write it to flannel0.

One thread sleeps in poll() on flannel0 and the socket and, once woken, drains each ready fd
until EAGAIN (one wakeup moves a whole burst), as upstream's proxy does in one select loop.
Two threads (FLANNELD_UDP_THREADS=2) overlap one direction's syscalls with the other's
Python, but hand the GIL to each other at every syscall: measured (bench/udp), the context
switches cost more than the overlap gains, ~1.4 against ~1.95 Gbit/s on 2 cores.  This is
the plain path (one packet per syscall, any kernel); fastpath.OffloadForwarder replaces the
two directions' drains where the kernel has TUN offloads and UDP GSO/GRO.  Buffers are allocated once; the
per-packet work is slicing memoryviews.  Nothing a peer or a pod sends can stop a loop:
every packet is either forwarded or counted as a drop with its reason.
"""

from __future__ import annotations

import errno
import functools
import ipaddress
import logging
import os
import resource
import select
import socket
import threading
import time
from typing import Any, Callable, Container, Dict, Iterator, List, Optional, Sequence, Tuple

from cni_flannel.daemon.udp import counters as C
from cni_flannel.daemon.udp.gro import lone_header
from cni_flannel.daemon.udp.offload import NO_VNET, complete_csum
from cni_flannel.daemon.udp.packet import (Buffer, check_ipv4, decrement_ttl, net_unreachable, NOT_IPV4, SHORT,
                                           TTL_EXPIRED)
from cni_flannel.daemon.udp.routes import Addr, PeerTable
from cni_flannel.daemon.udp.threads import thread_main, tune_gc

log = logging.getLogger("cni_flannel.daemon.udp")

THREADS_ENV = "FLANNELD_UDP_THREADS"  # "2": a thread per direction (default: one for both)
BUFSIZE = 65536          # any datagram fits, so an oversized one is seen whole and counted
LOG_EVERY = 60.0         # seconds between counter log lines (only when something changed)
RUSAGE_THREAD = getattr(resource, "RUSAGE_THREAD", 1)  # Linux; the constant is 1
_GONE = (errno.EBADFD, errno.EIO, errno.ENXIO, errno.EBADF, errno.ENODEV)

# One direction's inner loop: drain(fd, peer table, drops) -> (packets, bytes) it moved, and
# optionally how many of them moved in batches of several, and with partial checksums.
Drain = Callable[[int, PeerTable, Dict[str, int]], Sequence[int]]


class Forwarder:
    def __init__(self, tun_fd: int, sock: socket.socket, table: PeerTable, own_subnet: str,
                 mtu: int, tun_addr: Optional[str] = None) -> None:
        net = ipaddress.IPv4Network(own_subnet)
        self.own_net, self.own_mask = int(net.network_address), int(net.netmask)
        self.tun_addr = ipaddress.IPv4Address(tun_addr or net.network_address).packed
        self.tun_fd = tun_fd
        self.sock = sock
        self.table = table
        self.mtu = mtu
        self.counters = C.Counters()
        self._stopping = False
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._threads: List[threading.Thread] = []
        self._last_log = ""
        # Our lease said PartialChecksums but this (plain) path cannot write NEEDS_CSUM into
        # flannel0: peers' TCP checksums are finished here instead (backends/udp.py).
        self.finish_tcp_checksums = False

    # --- control (called from the backend's thread) ----------------------------------
    def start(self) -> None:
        tune_gc()
        pairs: Tuple[Tuple[Callable[[], None], str], ...] = ((self._both_ways, "udp-forward"),)
        if os.environ.get(THREADS_ENV) == "2":
            pairs = ((self._tun_to_udp, "udp-tun2udp"), (self._udp_to_tun, "udp-udp2tun"))
        for target, name in pairs:
            t = threading.Thread(target=thread_main(target, name, lambda: self._stopping), name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def set_table(self, table: PeerTable) -> None:
        self.table = table  # one reference swap: the loops pick it up with the next packet

    def set_tun(self, fd: int) -> None:
        old, self.tun_fd = self.tun_fd, fd
        self._wake()
        if old != fd:
            time.sleep(0.05)  # let the loop leave poll() on the old fd before it closes
            close_fd(old)

    def stop(self) -> None:
        self._stopping = True
        self._wake()
        for t in self._threads:
            t.join(5)
        self._threads = []
        for fd in (self._wake_r, self._wake_w):
            close_fd(fd)
        self._wake_r = self._wake_w = -1

    def log_counters(self, force: bool = False) -> None:
        text = self.counters.summary()
        if force or text != self._last_log:
            log.info("udp forwarder: %s", text)
            self._last_log = text

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    # --- the loops' shared skeleton: sleep, wake, hand over one batch -------------------
    def _tun_wakeups(self) -> Iterator[int]:
        """Yield flannel0's fd each time it may have packets (or a second passed); follows
        a recreated flannel0, empties the wake pipe, logs the counters now and then."""
        next_log = time.monotonic() + LOG_EVERY
        fd = -1
        poller = select.poll()
        poller.register(self._wake_r, select.POLLIN)
        while not self._stopping:
            fd = self._follow_tun(poller, fd)
            for rfd, _ in poller.poll(1000):
                if rfd == self._wake_r:
                    _drain_pipe(rfd)
            now = time.monotonic()
            if now >= next_log:
                self.log_counters()
                next_log = now + LOG_EVERY
            yield fd

    def _follow_tun(self, poller: "select.poll", fd: int) -> int:
        """flannel0's current fd, registered with ``poller`` in place of ``fd`` when it changed
        (first round, or flannel0 was recreated)."""
        if fd != self.tun_fd:
            if fd >= 0:
                _unregister(poller, fd)
            fd = self.tun_fd
            poller.register(fd, select.POLLIN)
        return fd

    def _udp_wakeups(self) -> Iterator[int]:
        """Yield flannel0's current fd each time the socket may have datagrams."""
        poller = select.poll()
        poller.register(self.sock.fileno(), select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        while not self._stopping:
            poller.poll(1000)
            yield self.tun_fd

    def _pump(self, wakeups: Iterator[int], stats: C.Direction, drain: Drain) -> None:
        """Run one direction: at each wakeup, ``drain`` empties its source until EAGAIN with the
        peer table of that moment and says what it moved; the counters get it as one batch."""
        usage = resource.getrusage
        for fd in wakeups:
            drops: Dict[str, int] = {}
            moved = drain(fd, self.table, drops)
            ru = usage(RUSAGE_THREAD)
            _count(stats, moved, drops, ru.ru_utime + ru.ru_stime, ru.ru_stime)

    def _tun_to_udp(self) -> None:
        self._pump(self._tun_wakeups(), self.counters.tun_to_udp, self._tun_to_udp_drain())

    def _udp_to_tun(self) -> None:
        self._pump(self._udp_wakeups(), self.counters.udp_to_tun, self._udp_to_tun_drain())

    def _both_ways(self) -> None:
        """Both directions in one thread (one poll on flannel0 and the socket): no GIL handed
        back and forth between two busy threads of one process.  The thread's CPU time is
        read once per wakeup and shared between the directions by the packets they moved."""
        out_drain, in_drain = self._tun_to_udp_drain(), self._udp_to_tun_drain()
        out_stats, in_stats = self.counters.tun_to_udp, self.counters.udp_to_tun

        sock = self.sock.fileno()
        usage = resource.getrusage
        spent = [0.0, 0.0, 0.0, 0.0]  # CPU, system: out, then in
        last = usage(RUSAGE_THREAD)
        poller = select.poll()
        poller.register(self._wake_r, select.POLLIN)
        poller.register(sock, select.POLLIN)
        next_log = time.monotonic() + LOG_EVERY
        fd = -1
        while not self._stopping:
            fd = self._follow_tun(poller, fd)
            moved_out = moved_in = None
            drops_out: Dict[str, int] = {}
            drops_in: Dict[str, int] = {}
            for rfd, _ in poller.poll(1000):
                if rfd == fd:
                    moved_out = out_drain(fd, self.table, drops_out)
                elif rfd == sock:
                    moved_in = in_drain(fd, self.table, drops_in)
                else:
                    _drain_pipe(rfd)
            if moved_out is not None or moved_in is not None:
                now = usage(RUSAGE_THREAD)
                cpu = now.ru_utime - last.ru_utime + now.ru_stime - last.ru_stime
                system = now.ru_stime - last.ru_stime
                last = now
                a = moved_out[0] if moved_out is not None else 0
                b = moved_in[0] if moved_in is not None else 0
                share = a / (a + b) if a + b else (0.5 if moved_in is not None and moved_out is not None
                                                    else 1.0 if moved_out is not None else 0.0)
                spent[0] += cpu * share
                spent[1] += system * share
                spent[2] += cpu * (1 - share)
                spent[3] += system * (1 - share)
                if moved_out is not None:
                    _count(out_stats, moved_out, drops_out, spent[0], spent[1])
                if moved_in is not None:
                    _count(in_stats, moved_in, drops_in, spent[2], spent[3])
            now_t = time.monotonic()
            if now_t >= next_log:
                self.log_counters()
                next_log = now_t + LOG_EVERY

    # --- flannel0 -> peers ---------------------------------------------------------------
    def _route(self, pkt: memoryview, n: int, fd: int, table: PeerTable, drops: Dict[str, int]) -> Optional[Addr]:
        """The peer for the packet ``pkt[:n]`` read from flannel0; None when it goes nowhere
        (counted; a destination in the Network without a lease is answered unreachable)."""
        if n < 20 or pkt[0] >> 4 != 4:
            why = SHORT if n < 20 else NOT_IPV4
            drops[why] = drops.get(why, 0) + 1
            return None
        dst = int.from_bytes(pkt[16:20], "big")
        addr = table.lookup(dst)
        if addr is None:
            if table.in_network(dst):
                reply = net_unreachable(pkt, n, self.tun_addr)
                if reply is not None:
                    self._write_tun(fd, reply)
                drops[C.UNREACHABLE] = drops.get(C.UNREACHABLE, 0) + 1
            else:
                drops[C.NO_ROUTE] = drops.get(C.NO_ROUTE, 0) + 1
        return addr

    def _write_tun(self, fd: int, packet: bytes) -> None:
        try:
            os.write(fd, packet)
        except OSError:
            pass

    def _tun_to_udp_drain(self) -> Drain:
        buf = bytearray(BUFSIZE)
        mv = memoryview(buf)
        bufs = [buf]
        readv, sendto, route = os.readv, self.sock.sendto, self._route

        def drain(fd: int, table: PeerTable, drops: Dict[str, int]) -> Tuple[int, int]:
            packets = nbytes = 0
            while True:
                try:
                    n = readv(fd, bufs)
                except BlockingIOError:
                    break
                except OSError as exc:
                    _read_failed(exc, drops)
                    break
                addr = route(mv, n, fd, table, drops)
                if addr is None:
                    continue
                if not decrement_ttl(buf):
                    drops[TTL_EXPIRED] = drops.get(TTL_EXPIRED, 0) + 1
                    continue
                try:
                    sendto(mv[:n], addr)
                except OSError:  # e.g. EHOSTUNREACH, ENETUNREACH: the peer's problem, not ours
                    drops[C.IO_ERROR] = drops.get(C.IO_ERROR, 0) + 1
                    continue
                packets += 1
                nbytes += n
            return packets, nbytes

        return drain

    # --- peers -> flannel0 ---------------------------------------------------------------
    def _udp_to_tun_drain(self) -> Drain:
        buf = bytearray(BUFSIZE)
        mv = memoryview(buf)
        recv = functools.partial(self.sock.recvfrom_into, buf, BUFSIZE, socket.MSG_DONTWAIT)
        write = os.write
        own_net, own_mask, mtu = self.own_net, self.own_mask, self.mtu
        finish = self.finish_tcp_checksums

        def drain(fd: int, table: PeerTable, drops: Dict[str, int]) -> Tuple[int, int]:
            packets = nbytes = 0
            for n, _ in from_peers(recv, table.sources, drops):
                why = inbound_drop(mv, n, own_net, own_mask, mtu)
                if why is not None:
                    drops[why] = drops.get(why, 0) + 1
                    continue
                decrement_ttl(buf)  # cannot fail: inbound_drop checked the TTL
                if finish and lone_header(mv, 0, n) is not NO_VNET:  # pseudo-header sum put in
                    complete_csum(mv[:n], n, (buf[0] & 0x0F) * 4, 16)
                try:
                    write(fd, mv[:n])
                except OSError:
                    drops[C.IO_ERROR] = drops.get(C.IO_ERROR, 0) + 1
                    continue
                packets += 1
                nbytes += n
            return packets, nbytes

        return drain


def from_peers(recv: Callable[[], Tuple[Any, ...]], sources: Container[str],
               drops: Dict[str, int]) -> Iterator[Tuple[Any, ...]]:
    """What ``recv`` (recvfrom_into / recvmsg_into, non-blocking; the sender's address last)
    returns for each datagram from a peer's PublicIP, until the socket is empty; errors and
    other senders are counted as drops."""
    while True:
        try:
            got = recv()
        except BlockingIOError:
            return
        except OSError:  # ICMP port unreachable from a peer reported on this socket
            drops[C.IO_ERROR] = drops.get(C.IO_ERROR, 0) + 1
            continue
        if got[-1][0] not in sources:
            drops[C.UNKNOWN_SOURCE] = drops.get(C.UNKNOWN_SOURCE, 0) + 1
            continue
        yield got


def inbound_drop(p: Buffer, size: int, own_net: int, own_mask: int, mtu: int) -> Optional[str]:
    """Why the packet ``p[:size]`` a peer sent is not written to flannel0 (None: it is): larger
    than flannel0's MTU, not one well-formed IPv4 packet, not for this node's subnet, or a TTL
    that would expire here (checked, not decremented: the caller decrements once per write)."""
    if size > mtu:
        return C.OVERSIZED
    why = check_ipv4(p, size)
    if why is None and int.from_bytes(p[16:20], "big") & own_mask != own_net:
        why = C.NOT_FOR_US
    if why is None and p[8] <= 1:
        why = TTL_EXPIRED
    return why


def _count(stats: C.Direction, moved: Sequence[int], drops: Dict[str, int], cpu: float, system: float) -> None:
    """A drain's result (packets, bytes[, batched[, partial checksums]]) into its counters."""
    stats.add(moved[0], moved[1], drops, cpu, moved[2] if len(moved) > 2 else 0, system,
              moved[3] if len(moved) > 3 else 0)


def _read_failed(exc: OSError, drops: Dict[str, int]) -> None:
    if exc.errno in _GONE:  # flannel0 went away: the backend's reconcile recreates it
        time.sleep(0.2)
    else:
        drops[C.IO_ERROR] = drops.get(C.IO_ERROR, 0) + 1


def close_fd(fd: int) -> None:
    if fd >= 0:
        try:
            os.close(fd)
        except OSError:
            pass


def _drain_pipe(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except OSError:
        pass


def _unregister(poller: "select.poll", fd: int) -> None:
    try:
        poller.unregister(fd)
    except (KeyError, ValueError):
        pass
