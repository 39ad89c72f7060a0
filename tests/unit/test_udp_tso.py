"""tso.py: TSO super-packets cut into the wire's segments, checked against a reference
segmenter written here from RFC 791/793 (header per segment, checksums by a word loop)."""

from __future__ import annotations

import os
import random
import struct
from typing import List

import pytest
from hypothesis import given, settings, strategies as st

from cni_flannel.daemon.udp import tso
from cni_flannel.daemon.udp.gro import NO_VNET, lone_header
from cni_flannel.daemon.udp.offload import complete_csum
from cni_flannel.daemon.udp.packet import ipv4_packet

SRC, DST = bytes([10, 244, 1, 2]), bytes([10, 244, 2, 3])


def word_sum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def super_packet(payload: bytes, seq: int = 1000, ident: int = 7, flags: int = 0x18, ttl: int = 64,
                 options: bytes = b"") -> bytearray:
    tcp = struct.pack("!HHIIBBHHH", 40000, 5201, seq, 99, (5 + len(options) // 4) << 4, flags, 512, 0, 0) + options
    return bytearray(ipv4_packet(SRC, DST, tcp + payload, proto=6, ttl=ttl, ident=ident))


def reference(pkt: bytes, mss: int) -> List[bytes]:
    """What the kernel's tcp_gso_segment sends, TTL - 1 (the forwarder's hop) and full checksums."""
    ihl = (pkt[0] & 15) * 4
    thl = (pkt[ihl + 12] >> 4) * 4
    hl = ihl + thl
    ident = struct.unpack("!H", pkt[4:6])[0]
    seq = struct.unpack("!I", pkt[ihl + 4:ihl + 8])[0]
    flags = pkt[ihl + 13]
    data = pkt[hl:]
    out = []
    chunks = [data[o:o + mss] for o in range(0, len(data), mss)]
    for i, chunk in enumerate(chunks):
        f = flags if i == len(chunks) - 1 else flags & ~0x09
        f = f if i == 0 else f & ~0x80
        ip = bytearray(pkt[:ihl])
        struct.pack_into("!HH", ip, 2, hl + len(chunk), (ident + i) & 0xFFFF)
        ip[8] -= 1
        ip[10:12] = b"\0\0"
        struct.pack_into("!H", ip, 10, ~word_sum(bytes(ip)) & 0xFFFF)
        tcp = bytearray(pkt[ihl:hl])
        struct.pack_into("!I", tcp, 4, (seq + i * mss) & 0xFFFFFFFF)
        tcp[13] = f
        tcp[16:18] = b"\0\0"
        pseudo = SRC + DST + struct.pack("!BBH", 0, 6, len(tcp) + len(chunk))
        struct.pack_into("!H", tcp, 16, ~word_sum(pseudo + bytes(tcp) + chunk) & 0xFFFF or 0xFFFF)
        out.append(bytes(ip + tcp) + chunk)
    return out


def cut_all(pkt: bytearray, mss: int, full: bool, share: int = 64) -> List[bytes]:
    """The segments as the sender lays them out: ``headers`` (fast path, partial checksums)
    where it applies, ``write`` otherwise, in shares of at most ``share`` segments."""
    cut = tso.plan(memoryview(pkt), len(pkt), mss)
    assert cut is not None
    blob = bytearray()
    first = 0
    while first < cut.count:
        k = min(share, cut.count - first)
        hv = memoryview(bytearray(k * cut.hl))
        if not full and cut.headers(hv, first, k):
            for j in range(k):
                src = cut.hl + (first + j) * mss
                blob += bytes(hv[j * cut.hl:(j + 1) * cut.hl]) + pkt[src:src + mss]
        else:
            out = bytearray(70000)
            blob += out[:cut.write(out, 0, first, k, full)]
        first += k
    sizes = [cut.size] * (cut.count - 1) + [cut.last_size]
    segs, pos = [], 0
    for size in sizes:
        segs.append(bytes(blob[pos:pos + size]))
        pos += size
    assert pos == len(blob)
    return segs


def to_partial(seg: bytes) -> bytes:
    """A reference segment with the TCP checksum field holding the pseudo-header sum instead."""
    s = bytearray(seg)
    pseudo = SRC + DST + struct.pack("!BBH", 0, 6, len(s) - 20)
    struct.pack_into("!H", s, 36, word_sum(pseudo))
    return bytes(s)


CASES = [  # (payload length, mss, seq, id, flags, options)
    (45 * 1420 + 3, 1420, 1000, 7, 0x18, b""),
    (46 * 1420, 1420, 0xFFFFFFFF - 5000, 0xFFF0, 0x98, bytes(12)),  # seq and id wrap, CWR+PSH
    (1420 * 3 + 1, 1420, 5, 1, 0x19, bytes(12)),                    # FIN on the last one only
    (1, 1420, 5, 1, 0x10, b""),                                     # one segment, odd length
    (64999, 1, 123, 0, 0x10, b""),                                  # 1-byte segments
    (10000, 999, 0x12345678, 0x8000, 0x10, bytes(8)),
]


@pytest.mark.parametrize("length, mss, seq, ident, flags, options", CASES)
def test_full_checksums_match_the_reference(length, mss, seq, ident, flags, options):
    rnd = random.Random(length)
    pkt = super_packet(bytes(rnd.getrandbits(8) for _ in range(length)), seq, ident, flags, options=options)
    assert cut_all(pkt, mss, full=True, share=44) == reference(bytes(pkt), mss)


@pytest.mark.parametrize("share", [64, 44, 7, 1])
@pytest.mark.parametrize("length, mss, seq, ident, flags, options", CASES)
def test_partial_checksums_are_the_pseudo_header_sums(length, mss, seq, ident, flags, options, share):
    pkt = super_packet(bytes(range(256)) * (length // 256) + bytes(length % 256), seq, ident, flags,
                       options=options)
    assert cut_all(pkt, mss, full=False, share=share) == [to_partial(s) for s in reference(bytes(pkt), mss)]


def test_the_fast_path_is_taken_and_steps_aside_where_a_field_wraps():
    pkt = super_packet(bytes(20 * 1000))
    cut = tso.plan(memoryview(pkt), len(pkt), 1000)
    assert cut is not None and cut.count == 20
    hv = memoryview(bytearray(20 * cut.hl))
    assert cut.headers(hv, 0, 20)
    wrapping = super_packet(bytes(20 * 1000), ident=0xFFFF - 3)
    cut = tso.plan(memoryview(wrapping), len(wrapping), 1000)
    assert cut is not None and not cut.headers(hv, 0, 20) and cut.headers(hv, 4, 16)


@pytest.mark.parametrize("mutate", [
    lambda p: p.__setitem__(9, 17),                 # UDP, not TCP
    lambda p: p.__setitem__(8, 1),                  # TTL would expire
    lambda p: p.__setitem__(6, 0x20),               # more fragments
    lambda p: p.__setitem__(7, 1),                  # a fragment offset
    lambda p: p.__setitem__(0, 0x65),               # not IPv4
    lambda p: p.__setitem__(32, 0x40),              # TCP header shorter than 20 bytes
    lambda p: p.__setitem__(2, 0x01),               # total length is not the packet's
])
def test_what_cannot_be_cut_is_refused(mutate):
    pkt = super_packet(bytes(3000))
    assert tso.plan(memoryview(pkt), len(pkt), 1000) is not None
    mutate(pkt)
    assert tso.plan(memoryview(pkt), len(pkt), 1000) is None


def test_a_lone_tcp_packet_is_written_with_its_checksum_left_to_the_kernel():
    seg = reference(bytes(super_packet(bytes(range(200)))), 1420)[0]
    p = bytearray(to_partial(seg))
    p[36:38] = b"\xde\xad"  # whatever the sender left there
    vnet = lone_header(memoryview(p), 0, len(p))
    flags, gso, _, _, start, offset = struct.unpack("<BBHHHH", vnet)
    assert (flags, gso, start, offset) == (1, 0, 20, 16)
    assert complete_csum(memoryview(p), len(p), start, offset) and bytes(p) == seg  # what the kernel finishes


@pytest.mark.parametrize("proto, frag", [(17, 0), (1, 0), (6, 0x2000), (6, 0x0001)])
def test_lone_udp_icmp_and_fragments_are_written_as_they_are(proto, frag):
    p = bytearray(ipv4_packet(SRC, DST, bytes(40), proto=proto))
    struct.pack_into("!H", p, 6, frag)
    before = bytes(p)
    assert lone_header(memoryview(p), 0, len(p)) is NO_VNET and bytes(p) == before


@settings(max_examples=300, deadline=None, database=None,
          derandomize=os.environ.get("CNI_FUZZ_RANDOM") != "1")
@given(data=st.data())
def test_any_bytes_read_from_flannel0_are_refused_or_cut_within_bounds(data):
    """A super-packet with any field flipped, or plain garbage: plan() refuses it or its cut
    writes exactly its segments, never past them, and never raises."""
    if data.draw(st.booleans()):
        pkt = bytearray(data.draw(st.binary(min_size=0, max_size=3000)))
    else:
        pkt = super_packet(bytes(data.draw(st.integers(1, 5000))), options=data.draw(st.sampled_from([b"", bytes(12)])))
        for _ in range(data.draw(st.integers(0, 4))):
            at = data.draw(st.integers(0, min(len(pkt), 60) - 1))
            pkt[at] = data.draw(st.integers(0, 255))
    mss = data.draw(st.integers(0, 2000))
    cut = tso.plan(memoryview(pkt), len(pkt), mss)
    if cut is None:
        return
    assert cut.count >= 1 and (cut.count - 1) * cut.size + cut.last_size == len(pkt) + (cut.count - 1) * cut.hl
    out = bytearray(cut.count * cut.size + 64)
    end = cut.write(out, 0, 0, cut.count, data.draw(st.booleans()))
    assert end == (cut.count - 1) * cut.size + cut.last_size and not any(out[end:])
    hv = memoryview(bytearray(cut.count * cut.hl + 8))
    if cut.headers(hv, 0, cut.count):
        assert not any(hv[cut.count * cut.hl:])
