"""Fuzzing the udp backend's data plane: random datagrams from peers and random packets as read
from flannel0.  Every one ends forwarded (as the same packet, TTL - 1, header checksum still
right) or as a drop counted under its reason — never an exception, never a loop that stops.

Two layers: the pure decisions (forwarder.inbound_drop, packet.net_unreachable) against the
test's own reference model, and the real plain Forwarder's two threads, fed through a datagram
socketpair standing in for flannel0 and UDP sockets on 127.0.0.1 (no root, nothing leaves the
host's loopback), whose counters must add up to exactly what the model expects.

CNI_FUZZ_EXAMPLES cases per target (100 in `make test`, >= 1000 in `make reliability`)."""
from __future__ import annotations

import ipaddress
import socket
import time
from collections import Counter
from typing import Iterator, List, Tuple

import pytest
from hypothesis import given

from cni_flannel.daemon.udp import counters as C
from cni_flannel.daemon.udp import packet as P
from cni_flannel.daemon.udp.forwarder import Forwarder, inbound_drop
from cni_flannel.daemon.udp.routes import PeerTable
from tests.fuzz import packets as S
from tests.fuzz.settings import EXAMPLES, fuzz_settings, report

OWN = ipaddress.IPv4Network(S.OWN_SUBNET)
PEER = ipaddress.IPv4Network(S.PEER_SUBNET)
NETWORK = ipaddress.IPv4Network(S.NETWORK)
TUN_ADDR = ipaddress.IPv4Address("10.244.1.0").packed
FORWARD = "forward"


# --- the reference model (independent of the code under test) ----------------------------------

def header_ok(p: bytes) -> bool:
    hlen = (p[0] & 0x0F) * 4 if p else 0
    return len(p) >= 20 and 20 <= hlen <= len(p) and S.ones_sum(p[:hlen]) == 0


def expect_inbound(p: bytes) -> str:
    """What flannel's proxy does with a datagram payload from a known peer."""
    n = len(p)
    if n > S.MTU:
        return C.OVERSIZED
    if n < 20:
        return P.SHORT
    if p[0] >> 4 != 4:
        return P.NOT_IPV4
    hlen = (p[0] & 0x0F) * 4
    if hlen < 20 or hlen > n or int.from_bytes(p[2:4], "big") != n:
        return P.BAD_HEADER
    if S.ones_sum(p[:hlen]) != 0:
        return P.BAD_CHECKSUM
    if ipaddress.IPv4Address(p[16:20]) not in OWN:
        return C.NOT_FOR_US
    return P.TTL_EXPIRED if p[8] <= 1 else FORWARD


def expect_outbound(p: bytes) -> Tuple[str, bool]:
    """What happens to a packet read from flannel0: (outcome, whether ICMP net unreachable is
    written back).  As upstream, only the destination and TTL are looked at before sending."""
    if len(p) < 20:
        return P.SHORT, False
    if p[0] >> 4 != 4:
        return P.NOT_IPV4, False
    dst = ipaddress.IPv4Address(p[16:20])
    if dst in PEER:
        return (P.TTL_EXPIRED if p[8] <= 1 else FORWARD), False
    if dst in NETWORK:
        hlen = (p[0] & 0x0F) * 4
        answer = 20 <= hlen <= len(p) and p[9] != P.PROTO_ICMP and not int.from_bytes(p[6:8], "big") & 0x1FFF
        return C.UNREACHABLE, answer
    return C.NO_ROUTE, False


def check_forwarded(before: bytes, after: bytes) -> None:
    """The same packet with TTL - 1; a header that was right is still right."""
    assert len(after) == len(before)
    assert after[:8] == before[:8] and after[9] == before[9] and after[12:] == before[12:]
    assert after[8] == before[8] - 1
    if header_ok(before):
        assert header_ok(after), (before[:24].hex(), after[:24].hex())


def check_unreachable(offender: bytes, reply: bytes) -> None:
    assert header_ok(reply) and int.from_bytes(reply[2:4], "big") == len(reply)
    assert reply[9] == P.PROTO_ICMP and reply[12:16] == TUN_ADDR and reply[16:20] == offender[12:16]
    assert reply[20:22] == bytes([P.ICMP_DEST_UNREACH, P.ICMP_NET_UNREACH]) and S.ones_sum(reply[20:]) == 0
    hlen = (offender[0] & 0x0F) * 4
    assert reply[28:] == offender[:hlen + 8]  # its header and the first 8 bytes of its payload


# --- tallies -------------------------------------------------------------------------------------

@pytest.fixture
def tally(request) -> Iterator[Counter]:
    counts: Counter = Counter()
    yield counts
    report(request.node.name.replace("test_fuzz_", "daemon:"),
           {"cases": counts["cases"], "ok": counts[FORWARD], "errors": counts["cases"] - counts[FORWARD],
            "tracebacks": counts["tracebacks"]})
    assert counts["examples"] >= counts.get("asked", EXAMPLES) * 0.9, counts  # hypothesis ran what was asked
    assert counts[FORWARD] and counts["cases"] > counts[FORWARD], f"one outcome only: {counts}"


def counted(counts: Counter, fn):
    try:
        return fn()
    except AssertionError:
        raise
    except Exception:
        counts["tracebacks"] += 1
        raise


# --- the pure decisions --------------------------------------------------------------------------

def test_fuzz_udp_datagram(tally: Counter) -> None:
    """inbound_drop on a datagram from a known peer; forwarded ones survive decrement_ttl."""
    own_net, own_mask = int(OWN.network_address), int(OWN.netmask)

    @fuzz_settings()
    @given(S.packet_or_junk())
    def case(data: bytes) -> None:
        tally["examples"] += 1
        tally["cases"] += 1
        buf = bytearray(data)
        why = counted(tally, lambda: inbound_drop(memoryview(buf), len(buf), own_net, own_mask, S.MTU))
        want = expect_inbound(data)
        assert (why or FORWARD) == want, (data[:24].hex(), why, want)
        tally[why or FORWARD] += 1
        if why is None:
            assert P.decrement_ttl(buf)
            check_forwarded(data, bytes(buf))
    case()


def test_fuzz_udp_unreachable(tally: Counter) -> None:
    """net_unreachable for any packet read from flannel0: None exactly where RFC 792/1122 forbid
    an answer (or the header is unusable), else a well-formed ICMP net unreachable."""
    @fuzz_settings()
    @given(S.packet_or_junk())
    def case(data: bytes) -> None:
        tally["examples"] += 1
        tally["cases"] += 1
        reply = counted(tally, lambda: P.net_unreachable(memoryview(bytearray(data)), len(data), TUN_ADDR))
        answer = (len(data) >= 20 and data[0] >> 4 == 4 and expect_outbound(data[:16] + bytes([10, 244, 9, 1])
                                                                           + data[20:])[1])
        assert (reply is not None) == answer, data[:24].hex()
        if reply is not None:
            check_unreachable(data, reply)
            tally[FORWARD] += 1
    case()


# --- the real forwarding threads -----------------------------------------------------------------

class Plane:
    """A plain Forwarder between a datagram socketpair (its "flannel0") and a UDP socket, with a
    peer (10.244.2.0/24) at 127.0.0.1:<sink's port>; datagrams come from 127.0.0.1 too."""

    def __init__(self) -> None:
        self.tun_host, tun_dev = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        tun_dev.setblocking(False)
        self.tun_dev = tun_dev
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sink.bind(("127.0.0.1", 0))
        self.sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sender.bind(("127.0.0.1", 0))
        table = PeerTable(S.NETWORK, [(S.PEER_SUBNET, "127.0.0.1")], port=self.sink.getsockname()[1])
        self.fwd = Forwarder(tun_dev.fileno(), self.sock, table, own_subnet=S.OWN_SUBNET, mtu=S.MTU)
        self.fwd.start()

    def totals(self) -> Tuple[int, int]:
        c = self.fwd.counters
        return tuple(d.packets + sum(d.drops.values()) for d in (c.tun_to_udp, c.udp_to_tun))  # type: ignore[return-value]

    def wait_for(self, direction: int, total: int) -> None:
        """Until the loop has accounted for `total` packets; fails (not a silent timeout) after 10 s."""
        deadline = time.monotonic() + 10
        while self.totals()[direction] < total:
            assert time.monotonic() < deadline, f"forwarder accounted {self.totals()} of {total} ({direction})"
            assert all(t.is_alive() for t in self.fwd._threads), "a forwarding thread died"
            time.sleep(0.002)
        assert self.totals()[direction] == total, (self.totals(), total)

    @staticmethod
    def drain(s: socket.socket) -> List[bytes]:
        out = []
        while True:
            try:
                out.append(s.recv(65536, socket.MSG_DONTWAIT))
            except BlockingIOError:
                return out

    def close(self) -> None:
        self.fwd.stop()
        for s in (self.tun_host, self.tun_dev, self.sock, self.sink, self.sender):
            s.close()


def drops(d: C.Direction) -> Counter:
    return Counter({FORWARD: d.packets, **d.drops})


def test_fuzz_udp_forwarder(tally: Counter) -> None:
    plane = Plane()
    tally["asked"] = max(10, EXAMPLES // 4)  # each example is a burst of up to 8 + 8 packets
    try:
        @fuzz_settings(tally["asked"])
        @given(S.batches())
        def case(batch: Tuple[List[bytes], List[bytes]]) -> None:
            from_tun, from_peer = batch
            tally["examples"] += 1
            c = plane.fwd.counters
            # flannel0 -> peers
            before, total = drops(c.tun_to_udp), plane.totals()[0]
            for p in from_tun:
                plane.tun_host.send(p)
            plane.wait_for(0, total + len(from_tun))
            want = [expect_outbound(p) for p in from_tun]
            assert drops(c.tun_to_udp) - before == Counter(w for w, _ in want), [p[:24].hex() for p in from_tun]
            sent = plane.drain(plane.sink)
            for p, out in zip([p for p, w in zip(from_tun, want) if w[0] == FORWARD], sent):
                check_forwarded(p, out)
            assert len(sent) == sum(w == FORWARD for w, _ in want)
            replies = plane.drain(plane.tun_host)
            offenders = [p for p, w in zip(from_tun, want) if w[1]]
            assert len(replies) == len(offenders)
            for p, reply in zip(offenders, replies):
                check_unreachable(p, reply)
            # peers -> flannel0
            before, total = drops(c.udp_to_tun), plane.totals()[1]
            for p in from_peer:
                plane.sender.sendto(p, plane.sock.getsockname())
            plane.wait_for(1, total + len(from_peer))
            want_in = [expect_inbound(p) for p in from_peer]
            assert drops(c.udp_to_tun) - before == Counter(want_in), [p[:24].hex() for p in from_peer]
            written = plane.drain(plane.tun_host)
            assert len(written) == want_in.count(FORWARD)
            for p, out in zip([p for p, w in zip(from_peer, want_in) if w == FORWARD], written):
                check_forwarded(p, out)
            tally["cases"] += len(from_tun) + len(from_peer)
            tally[FORWARD] += len(sent) + len(written)
        case()
    finally:
        plane.close()
