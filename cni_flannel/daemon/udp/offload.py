"""The offload paths' packet work (pure; no I/O): TUN virtio-net headers, partial checksums
completed, TSO super-packets cut into wire packets.

flannel0 is opened with IFF_VNET_HDR, so every packet carries a virtio_net_hdr: the receiving
loop writes TSO packets with it (gro.py); the sending loop gets finished packets (no
TUNSETOFFLOAD flags, see fastpath.py) and keeps ``complete_csum`` and ``segment_tcp4`` only
for a flannel0 that hands over partial checksums or super-packets anyway.  ``segment_tcp4``
cuts an IPv4/TCP super-packet into MSS-sized packets laid end to end, each complete (IP id,
length, TTL − 1, TCP sequence, flags and both checksums), ready for one UDP_SEGMENT send.

Checksums use the identity "one's complement sum of 16-bit words == the number mod 0xFFFF",
so the summing runs in C (int.from_bytes) and never in a Python loop.
"""

from __future__ import annotations

import struct
from typing import Tuple

VNET_HDR_LEN = 10
VIRTIO_NET_HDR_F_NEEDS_CSUM = 1
VIRTIO_NET_HDR_GSO_NONE = 0
VIRTIO_NET_HDR_GSO_TCPV4 = 1
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
SOL_UDP = 17
UDP_SEGMENT = 103
UDP_GRO = 104
MAX_GSO_SEGMENTS = 64  # the kernel's UDP_MAX_SEGMENTS is 64 (older) or 128

_VNET = struct.Struct("<BBHHHH")  # flags, gso_type, hdr_len, gso_size, csum_start, csum_offset
_HH, _H, _I = struct.Struct("!HH"), struct.Struct("!H"), struct.Struct("!I")
PROTO_TCP = 6
PROTO_UDP = 17


def parse_vnet(buf: memoryview) -> Tuple[int, int, int, int, int]:
    """(flags, gso_type, gso_size, csum_start, csum_offset) of the header at buf[0:10]."""
    flags, gso_type, _hdr_len, gso_size, csum_start, csum_offset = _VNET.unpack_from(buf, 0)
    return flags, gso_type, gso_size, csum_start, csum_offset


def _fold_csum(value: int, odd: bool) -> int:
    """~(one's complement sum) of the big-endian number ``value`` (a byte string's words)."""
    s = (value << 8 if odd else value) % 0xFFFF
    return ~s & 0xFFFF if s else 0xFFFF


def complete_csum(pkt: memoryview, n: int, start: int, offset: int) -> bool:
    """Finish a CHECKSUM_PARTIAL packet: the field at start+offset holds the pseudo-header
    sum; the checksum covers pkt[start:n].  False when the offsets do not fit the packet."""
    at = start + offset
    if start < 20 or at + 2 > n:
        return False
    length = n - start
    c = _fold_csum(int.from_bytes(pkt[start:n], "big"), length % 2 == 1)
    pkt[at] = c >> 8
    pkt[at + 1] = c & 0xFF
    return True


def segment_tcp4(pkt: memoryview, n: int, mss: int, out: bytearray) -> Tuple[int, int]:
    """Cut the IPv4/TCP super-packet ``pkt[:n]`` into packets of at most ``mss`` payload
    bytes, written back to back into ``out``, each with TTL − 1 and correct checksums.

    Returns (size of every packet but the last, total bytes); (0, 0) when the packet is not
    a cuttable IPv4/TCP packet or its TTL expires (the caller counts it as dropped).

    Per packet only its payload is summed (the one big-number operation); the headers'
    contributions are sums of small integers worked out once."""
    if n < 40 or pkt[0] >> 4 != 4 or pkt[9] != PROTO_TCP or mss <= 0 or pkt[8] <= 1:
        return 0, 0
    ihl = (pkt[0] & 0x0F) * 4
    if ihl < 20 or ihl + 20 > n:
        return 0, 0
    thl = (pkt[ihl + 12] >> 4) * 4
    hl = ihl + thl
    if thl < 20 or hl > n:
        return 0, 0
    data = n - hl
    if data <= mss:
        mss = data or 1
    count = (data + mss - 1) // mss
    if count > MAX_GSO_SEGMENTS or count * hl + data > len(out):
        return 0, 0
    omv = memoryview(out)
    hdr = bytearray(pkt[:hl])
    ident, seq = hdr[4] << 8 | hdr[5], int.from_bytes(hdr[ihl + 4:ihl + 8], "big")
    flags = hdr[ihl + 13]
    hdr[8] -= 1                                          # TTL
    hdr[2] = hdr[3] = hdr[4] = hdr[5] = hdr[10] = hdr[11] = 0     # length, id, checksum: per packet
    t = ihl
    hdr[t + 4] = hdr[t + 5] = hdr[t + 6] = hdr[t + 7] = 0           # sequence: per packet
    hdr[t + 16] = hdr[t + 17] = 0                                   # checksum: per packet
    ip_base = int.from_bytes(hdr[:ihl], "big")
    tcp_base = int.from_bytes(hdr[ihl:hl], "big") + int.from_bytes(hdr[12:20], "big") + PROTO_TCP
    put_hh, put_h, put_i = _HH.pack_into, _H.pack_into, _I.pack_into
    pos, off = 0, hl
    for i in range(count):
        size = mss if i < count - 1 else data - mss * (count - 1)
        total = hl + size
        omv[pos:pos + hl] = hdr
        omv[pos + hl:pos + total] = pkt[off:off + size]
        f = flags if i == count - 1 else flags & ~0x09   # FIN and PSH only on the last packet
        if i:
            f &= ~0x80                                    # CWR only on the first
        s = (ip_base + total + ident) % 0xFFFF
        put_hh(out, pos + 2, total, ident)
        put_h(out, pos + 10, ~s & 0xFFFF if s else 0)
        body = int.from_bytes(pkt[off:off + size], "big") % 0xFFFF  # the one big-number step
        if size % 2:
            body = (body << 8) % 0xFFFF  # an odd tail is padded with a zero byte
        s = (body + tcp_base + total - ihl + (seq >> 16) + (seq & 0xFFFF) + f - flags) % 0xFFFF
        put_i(out, pos + ihl + 4, seq)
        out[pos + ihl + 13] = f
        put_h(out, pos + ihl + 16, ~s & 0xFFFF if s else 0xFFFF)
        ident = (ident + 1) & 0xFFFF
        seq = (seq + size) & 0xFFFFFFFF
        off += size
        pos += total
    return (hl + mss if count > 1 else pos), pos
