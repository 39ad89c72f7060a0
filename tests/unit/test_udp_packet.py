"""The udp forwarder's pure packet functions and peer table (no root, no sockets)."""
from __future__ import annotations

import ipaddress
import random
import struct

import pytest

from cni_flannel.daemon.udp import packet as P
from cni_flannel.daemon.udp.routes import PeerTable


def slow_checksum(data: bytes) -> int:
    """RFC 1071 the long way: 16-bit words, end-around carry."""
    if len(data) % 2:
        data += b"\0"
    s = 0
    for (w,) in struct.iter_unpack("!H", data):
        s += w
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ip(a: str) -> bytes:
    return ipaddress.IPv4Address(a).packed


@pytest.mark.parametrize("seed", range(200))
def test_checksum_matches_rfc1071(seed):
    rng = random.Random(seed)
    data = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 80)))
    if seed == 0:
        data = b"\xff\xff" * 10  # sums to "negative zero"
    assert P.checksum(data) == slow_checksum(data)


@pytest.mark.parametrize("seed", range(500))
def test_ttl_decrement_keeps_the_header_checksum_valid(seed):
    rng = random.Random(seed)
    ttl = rng.randrange(2, 256)
    pkt = bytearray(P.ipv4_packet(rng.randbytes(4), rng.randbytes(4), rng.randbytes(8),
                                  proto=rng.randrange(256), ttl=ttl, ident=rng.randrange(65536)))
    assert P.check_ipv4(pkt, len(pkt)) is None
    assert P.decrement_ttl(pkt)
    assert pkt[8] == ttl - 1
    assert P.check_ipv4(pkt, len(pkt)) is None, "checksum broken by the TTL change"
    expect = slow_checksum(bytes(pkt[:10]) + b"\0\0" + bytes(pkt[12:20]))
    assert (pkt[10] << 8 | pkt[11]) in (expect, 0xFFFF if expect == 0 else expect)


@pytest.mark.parametrize("ttl", [0, 1])
def test_ttl_expiring_is_refused_and_leaves_the_packet(ttl):
    pkt = bytearray(P.ipv4_packet(ip("10.244.1.2"), ip("10.244.2.2"), b"x", ttl=ttl))
    before = bytes(pkt)
    assert not P.decrement_ttl(pkt)
    assert bytes(pkt) == before


GOOD = P.ipv4_packet(ip("10.244.2.2"), ip("10.244.1.2"), b"hello", ttl=9)


@pytest.mark.parametrize("data, why", [
    (b"", P.SHORT),
    (GOOD[:19], P.SHORT),
    (b"\x60" + GOOD[1:], P.NOT_IPV4),                       # IPv6 version nibble
    (b"\x44" + GOOD[1:], P.BAD_HEADER),                     # IHL 4
    (b"\x4f" + GOOD[1:], P.BAD_HEADER),                     # 60-byte header in a 25-byte packet
    (GOOD[:2] + b"\x00\x64" + GOOD[4:], P.BAD_HEADER),      # total length 100, 25 bytes here
    (GOOD + b"pad", P.BAD_HEADER),
    (GOOD[:10] + b"\x12\x34" + GOOD[12:], P.BAD_CHECKSUM),
    (GOOD, None),
])
def test_check_ipv4(data, why):
    buf = bytearray(data) + bytearray(100)  # as in the forwarder: a larger buffer, n bytes valid
    assert P.check_ipv4(memoryview(buf), len(data)) == why


def test_net_unreachable_is_upstreams_icmp():
    offender = P.ipv4_packet(ip("10.244.1.5"), ip("10.244.99.5"), bytes(range(40)), proto=6, ttl=63)
    reply = P.net_unreachable(bytearray(offender), len(offender), ip("10.244.1.0"))
    assert reply is not None and P.check_ipv4(reply, len(reply)) is None
    assert reply[8] == P.UNREACH_TTL and reply[9] == P.PROTO_ICMP
    assert reply[12:16] == ip("10.244.1.0") and reply[16:20] == ip("10.244.1.5")
    icmp = reply[20:]
    assert icmp[:2] == bytes([3, 0]) and slow_checksum(icmp) == 0
    assert icmp[8:] == offender[:28]  # the offender's header and first 8 payload bytes


@pytest.mark.parametrize("offender", [
    P.ipv4_packet(ip("10.244.1.5"), ip("10.244.99.5"), b"\x08\0\0\0\0\0\0\0", proto=1),   # ICMP
    P.ipv4_packet(ip("10.244.1.5"), ip("10.244.99.5"), b"x" * 16, proto=17)[:6] + b"\x00\x10"
    + P.ipv4_packet(ip("10.244.1.5"), ip("10.244.99.5"), b"x" * 16, proto=17)[8:],       # a later fragment
    b"\x45\0\0",                                                                          # truncated
])
def test_no_unreachable_about_icmp_fragments_or_garbage(offender):
    assert P.net_unreachable(bytearray(offender), len(offender), ip("10.244.1.0")) is None


def test_net_unreachable_for_a_short_payload_quotes_what_there_is():
    offender = P.ipv4_packet(ip("10.244.1.5"), ip("10.244.99.5"), b"abc", proto=17)
    reply = P.net_unreachable(bytearray(offender), len(offender), ip("10.244.1.0"))
    assert reply is not None and reply[28:] == offender


def n(a: str) -> int:
    return int(ipaddress.IPv4Address(a))


def test_peer_table_longest_prefix_and_network():
    t = PeerTable("10.244.0.0/16", [("10.244.2.0/24", "198.18.0.2"), ("10.244.3.0/24", "198.18.0.3"),
                                    ("10.244.4.0/23", "198.18.0.4"), ("10.244.4.128/25", "198.18.0.5")], port=8285)
    assert t.lookup(n("10.244.2.77")) == ("198.18.0.2", 8285)
    assert t.lookup(n("10.244.5.1")) == ("198.18.0.4", 8285)
    assert t.lookup(n("10.244.4.200")) == ("198.18.0.5", 8285)
    assert t.lookup(n("10.244.4.100")) == ("198.18.0.4", 8285)
    assert t.lookup(n("10.244.9.1")) is None and t.in_network(n("10.244.9.1"))
    assert not t.in_network(n("10.245.0.1")) and t.lookup(n("10.245.2.1")) is None
    assert t.sources == {"198.18.0.2", "198.18.0.3", "198.18.0.4", "198.18.0.5"} and len(t) == 4
    assert PeerTable("10.244.0.0/16").lookup(n("10.244.2.1")) is None


def test_counters_export_to_prometheus():
    from prometheus_client import CollectorRegistry, generate_latest

    from cni_flannel.daemon.udp import counters as C
    c = C.Counters()
    c.tun_to_udp.add(5, 700, {"short": 2}, 0.25)
    c.udp_to_tun.add(3, 300, {}, 0.0)
    c.udp_to_tun.add(1, 100, {"unknown_source": 4}, 0.5, batched=3, system=0.2)
    registry = CollectorRegistry()
    assert C.Collector(lambda: c).collect  # the class itself, registered on a private registry:
    registry.register(C.Collector(lambda: c))
    text = generate_latest(registry).decode()
    for line in ('flannel_udp_packets_total{direction="tun_to_udp"} 5.0',
                 'flannel_udp_packets_total{direction="udp_to_tun"} 4.0',
                 'flannel_udp_bytes_total{direction="udp_to_tun"} 400.0',
                 'flannel_udp_wakeups_total{direction="udp_to_tun"} 2.0',
                 'flannel_udp_cpu_seconds_total{direction="udp_to_tun"} 0.5',
                 'flannel_udp_batched_packets_total{direction="udp_to_tun"} 3.0',
                 'flannel_udp_drops_total{direction="tun_to_udp",reason="short"} 2.0',
                 'flannel_udp_drops_total{direction="udp_to_tun",reason="unknown_source"} 4.0'):
        assert line in text, text
    assert "tun_to_udp: 5 packets, 700 bytes; dropped: short 2" in c.summary()
    assert c.as_dict()["udp_to_tun"]["system_seconds"] == 0.2 and c.as_dict()["udp_to_tun"]["batched"] == 3
    empty = CollectorRegistry()
    empty.register(C.Collector(lambda: None))
    assert "flannel_udp" not in generate_latest(empty).decode()
