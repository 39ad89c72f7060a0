"""The offload fast path's packet work: TSO super-packets cut into wire packets, partial
checksums completed, GRO trains merged back into TSO writes (no root, no sockets)."""
from __future__ import annotations

import random
import struct

import pytest

from cni_flannel.daemon.udp import offload as O
from cni_flannel.daemon.udp.packet import check_ipv4
from tests.unit.test_udp_packet import slow_checksum

SRC, DST = bytes([10, 244, 1, 2]), bytes([10, 244, 2, 2])


def tcp_packet(payload: bytes, seq: int = 1000, flags: int = 0x18, ttl: int = 64, ident: int = 7,
               options: bytes = b"\x01\x01\x08\x0a" + bytes(range(8))) -> bytearray:
    thl = 20 + len(options)
    tcp = struct.pack("!HHIIBBHHH", 40000, 5201, seq, 555, (thl // 4) << 4, flags, 512, 0, 0) + options
    total = 20 + thl + len(payload)
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, ident, 0x4000, ttl, 6, 0, SRC, DST))
    c = slow_checksum(bytes(ip))
    ip[10:12] = c.to_bytes(2, "big")
    pkt = bytearray(ip + tcp + payload)
    c = tcp_checksum(pkt)
    pkt[36:38] = c.to_bytes(2, "big")
    return pkt


def tcp_checksum(pkt: bytes) -> int:
    ihl = (pkt[0] & 15) * 4
    seg = bytearray(pkt[ihl:])
    seg[16:18] = b"\0\0"
    pseudo = bytes(pkt[12:20]) + struct.pack("!BBH", 0, 6, len(seg))
    return slow_checksum(pseudo + bytes(seg))


def tcp_fields(pkt: bytes):
    ihl = (pkt[0] & 15) * 4
    thl = (pkt[ihl + 12] >> 4) * 4
    return {"seq": int.from_bytes(pkt[ihl + 4:ihl + 8], "big"), "flags": pkt[ihl + 13],
            "id": int.from_bytes(pkt[4:6], "big"), "ttl": pkt[8], "payload": bytes(pkt[ihl + thl:])}


def split(out: bytearray, seg: int, total: int):
    return [bytes(out[o:min(o + seg, total)]) for o in range(0, total, seg)]


@pytest.mark.parametrize("size, mss", [(14200, 1420), (14201, 1420), (1, 1420), (65000, 1448), (3000, 999)])
def test_segment_tcp4_cuts_a_super_packet_into_valid_wire_packets(size, mss):
    payload = random.Random(size).randbytes(size)
    sup = tcp_packet(payload, seq=0xFFFFF000, flags=0x18 | 0x01)  # PSH|FIN, and a wrapping sequence
    out = bytearray(O.MAX_GSO_SEGMENTS * 128 + 65536)
    seg, total = O.segment_tcp4(memoryview(sup), len(sup), mss, out)
    packets = split(out, seg, total)
    assert len(packets) == -(-size // mss)
    assert b"".join(tcp_fields(p)["payload"] for p in packets) == payload
    for i, p in enumerate(packets):
        assert check_ipv4(p, len(p)) is None, f"IP header of packet {i}"
        ihl = 20
        assert int.from_bytes(p[ihl + 16:ihl + 18], "big") in (tcp_checksum(p), 0xFFFF if tcp_checksum(p) == 0 else -1)
        f = tcp_fields(p)
        assert f["seq"] == (0xFFFFF000 + i * mss) & 0xFFFFFFFF and f["id"] == 7 + i and f["ttl"] == 63
        last = i == len(packets) - 1
        assert f["flags"] == (0x19 if last else 0x10)
        assert len(p) == (total - seg * (len(packets) - 1) if last else seg)


def test_segment_tcp4_refuses_what_it_cannot_cut():
    out = bytearray(200000)
    good = tcp_packet(b"x" * 3000)
    assert O.segment_tcp4(memoryview(tcp_packet(b"x" * 3000, ttl=1)), len(good), 1000, out) == (0, 0)
    udp = bytearray(good)
    udp[9] = 17
    assert O.segment_tcp4(memoryview(udp), len(udp), 1000, out) == (0, 0)
    assert O.segment_tcp4(memoryview(good), 30, 1000, out) == (0, 0)
    assert O.segment_tcp4(memoryview(good), len(good), 10, out) == (0, 0)  # > 64 packets


def test_complete_csum_finishes_a_partial_checksum():
    pkt = tcp_packet(b"hello world!!")
    want = int.from_bytes(pkt[36:38], "big")
    # what the kernel hands over: the field holds the folded pseudo-header sum
    pseudo = (int.from_bytes(pkt[12:20], "big") + 6 + (len(pkt) - 20)) % 0xFFFF
    pkt[36:38] = pseudo.to_bytes(2, "big")
    assert O.complete_csum(memoryview(pkt), len(pkt), 20, 16)
    assert int.from_bytes(pkt[36:38], "big") == want
    assert not O.complete_csum(memoryview(pkt), len(pkt), 20, 60)
