"""Hypothesis strategies for what the udp backend reads: inner IPv4 packets from flannel0 and
datagram payloads from peers.

Most cases start from a well-formed packet with hostile fields (any TTL, IHL, total length,
fragment offset, protocol; destinations in this node's subnet, a peer's, the Network without a
lease, outside it) and are then maybe broken (bad checksum, truncated, padded, a flipped byte);
the rest are raw bytes.  A reference model of the expected outcome lives in the test, not here.
"""
from __future__ import annotations

import ipaddress
from typing import Tuple

from hypothesis import strategies as st

NETWORK = "10.244.0.0/16"
OWN_SUBNET = "10.244.1.0/24"
PEER_SUBNET = "10.244.2.0/24"
MTU = 1472

#: inner addresses worth hitting: ours, a peer's, the Network without a lease, outside it, odd ones
ADDRESSES = ["10.244.1.5", "10.244.1.0", "10.244.1.255", "10.244.2.7", "10.244.2.255", "10.244.9.1",
             "10.244.255.255", "10.245.0.1", "192.0.2.1", "0.0.0.0", "255.255.255.255", "224.0.0.1", "127.0.0.1"]


def ones_sum(data: bytes) -> int:
    """RFC 1071 checksum the long way (16-bit words, end-around carry): the test's own oracle."""
    if len(data) % 2:
        data += b"\0"
    s = 0
    for i in range(0, len(data), 2):
        s += data[i] << 8 | data[i + 1]
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def address() -> st.SearchStrategy[bytes]:
    return st.one_of(st.sampled_from(ADDRESSES).map(lambda a: ipaddress.IPv4Address(a).packed),
                     st.binary(min_size=4, max_size=4))


@st.composite
def ipv4_packet(draw) -> bytes:
    """A packet whose header fields are drawn, then maybe broken (see the module doc).  Two in
    three start sane (version 4, a consistent length, a destination here or at the peer), so
    enough cases get past the header checks to be forwarded."""
    sane = draw(st.integers(0, 2)) > 0
    field = (lambda good, anything: st.just(good) if sane else st.one_of(st.just(good), anything))
    ihl = draw(st.one_of(st.just(5), st.integers(5, 7)) if sane else st.integers(0, 15))
    options = draw(st.binary(min_size=max(0, ihl * 4 - 20), max_size=max(0, ihl * 4 - 20)))
    payload = draw(st.one_of(st.binary(max_size=64), st.binary(min_size=MTU - 40, max_size=MTU + 40)))
    version = draw(field(4, st.integers(0, 15)))
    size = 20 + len(options) + len(payload)
    total = draw(field(size, st.integers(0, 0xFFFF)))
    ttl = draw(st.one_of(st.sampled_from([0, 1, 2, 64, 255]), st.integers(0, 255)))
    proto = draw(st.one_of(st.sampled_from([1, 6, 17]), st.integers(0, 255)))
    frag = draw(st.one_of(st.just(0x4000), st.just(0), st.integers(0, 0xFFFF)))  # flags + offset
    dst = draw(st.sampled_from(ADDRESSES[:5]).map(lambda a: ipaddress.IPv4Address(a).packed) if sane else address())
    header = bytearray([version << 4 | ihl, draw(st.integers(0, 255)), total >> 8, total & 0xFF,
                        *draw(st.binary(min_size=2, max_size=2)), frag >> 8, frag & 0xFF, ttl, proto, 0, 0])
    header += draw(address()) + dst + options
    c = ones_sum(bytes(header))
    header[10], header[11] = c >> 8, c & 0xFF
    packet = bytearray(header + payload)
    how = draw(st.sampled_from(["keep", "keep", "keep", "checksum", "truncate", "pad", "flip"]))
    if how == "checksum":
        packet[10] ^= draw(st.integers(1, 255))
    elif how == "truncate":
        del packet[draw(st.integers(0, len(packet))):]
    elif how == "pad":
        packet += draw(st.binary(min_size=1, max_size=16))
    elif how == "flip" and packet:
        at = draw(st.integers(0, len(packet) - 1))
        packet[at] ^= draw(st.integers(1, 255))
    return bytes(packet)


def packet_or_junk() -> st.SearchStrategy[bytes]:
    """What arrives: mostly packets as above, some raw bytes (empty included)."""
    return st.one_of(ipv4_packet(), ipv4_packet(), ipv4_packet(), st.binary(max_size=80))


def batches() -> st.SearchStrategy[Tuple[list, list]]:
    """(packets read from flannel0, datagrams from a peer): one wakeup's worth each."""
    return st.tuples(st.lists(packet_or_junk(), min_size=1, max_size=8),
                     st.lists(packet_or_junk(), min_size=1, max_size=8))
