"""The offload path's packet work: partial checksums completed (no root, no sockets); the
IPv4/TCP packet builders here serve tests/unit/test_udp_gro.py too."""
from __future__ import annotations

import struct

from cni_flannel.daemon.udp import offload as O
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


def test_complete_csum_finishes_a_partial_checksum():
    pkt = tcp_packet(b"hello world!!")
    want = int.from_bytes(pkt[36:38], "big")
    # what the kernel hands over: the field holds the folded pseudo-header sum
    pseudo = (int.from_bytes(pkt[12:20], "big") + 6 + (len(pkt) - 20)) % 0xFFFF
    pkt[36:38] = pseudo.to_bytes(2, "big")
    assert O.complete_csum(memoryview(pkt), len(pkt), 20, 16)
    assert int.from_bytes(pkt[36:38], "big") == want
    assert not O.complete_csum(memoryview(pkt), len(pkt), 20, 60)
