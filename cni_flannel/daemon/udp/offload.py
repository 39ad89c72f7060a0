"""The offload fast path's packet work (pure; no I/O): TUN virtio-net headers, TSO
super-packets cut into wire packets, partial checksums completed, GRO buffers split.

With IFF_VNET_HDR and TUNSETOFFLOAD(TUN_F_CSUM | TUN_F_TSO4) the kernel hands flannel0's
reader whole TCP super-packets (up to 64 KB, one read instead of ~45) prefixed by a
virtio_net_hdr.  Upstream peers expect one inner IP packet per datagram, so the super-packet
is cut here into MSS-sized IPv4/TCP packets laid end to end in one buffer, each complete
(IP id, length, TTL − 1, TCP sequence, flags and both checksums), and sent with one
``sendmsg`` carrying UDP_SEGMENT = the packet size: the kernel (or the NIC) turns that into
exactly those datagrams on the wire.  The receiving side asks for UDP_GRO, gets runs of
same-size datagrams in one ``recvmsg`` with their size, and splits them back (``gro_split``);
a datagram from a peer without GSO simply arrives alone.

Checksums use the identity "one's complement sum of 16-bit words == the number mod 0xFFFF",
so the summing runs in C (int.from_bytes) and never in a Python loop.
"""

from __future__ import annotations

import struct
from typing import List, Tuple

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


def _ip_csum(hdr: memoryview) -> int:
    s = int.from_bytes(hdr, "big") % 0xFFFF
    return ~s & 0xFFFF if s else 0


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


def gro_split(n: int, gso_size: int) -> List[Tuple[int, int]]:
    """(offset, length) of each datagram in a UDP_GRO buffer of ``n`` bytes."""
    if gso_size <= 0 or gso_size >= n:
        return [(0, n)]
    return [(off, min(gso_size, n - off)) for off in range(0, n, gso_size)]


def _pseudo_partial(p: memoryview, tcp_len: int) -> int:
    """The folded, not inverted, pseudo-header sum CHECKSUM_PARTIAL expects in the field."""
    s = (int.from_bytes(p[12:20], "big") + PROTO_TCP + tcp_len) % 0xFFFF
    return s or 0xFFFF


def merge_tcp4(buf: memoryview, segs: List[Tuple[int, int]], out: bytearray) -> List[Tuple[int, int, int]]:
    """Join runs of consecutive TCP segments of one flow (``segs``: (offset, size) of valid
    IPv4 packets in ``buf``, TTL > 1) into TSO super-packets for flannel0 with TTL − 1, as the
    kernel's GRO would:
    same addresses, ports, ACK, window and options; sequence numbers back to back; every
    payload but the last one full size; no flags but ACK (PSH on the last).

    Returns what to write, in order: (1, start, end) for a super-packet at out[start:end]
    (virtio header included), or (0, offset, size) for a packet in ``buf`` to write alone
    (its TTL not yet decremented)."""
    omv = memoryview(out)
    writes: List[Tuple[int, int, int]] = []
    pos = 0
    i, count = 0, len(segs)
    while i < count:
        off, size = segs[i]
        p = buf[off:off + size]
        j = i + 1
        ihl = (p[0] & 0x0F) * 4
        if p[9] == PROTO_TCP and not (p[6] & 0x3F or p[7]) and ihl + 20 <= size:
            thl = (p[ihl + 12] >> 4) * 4
            hl = ihl + thl
            mss = size - hl
            flags = p[ihl + 13]
            if mss > 0 and hl <= size and flags == 0x10:  # ACK alone (PSH would end the run here)
                seq = int.from_bytes(p[ihl + 4:ihl + 8], "big")
                data = mss
                last = mss
                while j < count and last == mss:
                    off2, size2 = segs[j]
                    q = buf[off2:off2 + size2]
                    more = size2 - hl
                    if (more <= 0 or more > mss or hl + data + more > 65535 or q[0] != p[0] or q[9] != PROTO_TCP
                            or q[6] & 0x3F or q[7] or (q[ihl + 12] >> 4) * 4 != thl or (q[ihl + 13] & ~0x08) != 0x10
                            or q[12:20] != p[12:20] or q[ihl:ihl + 4] != p[ihl:ihl + 4]
                            or int.from_bytes(q[ihl + 4:ihl + 8], "big") != (seq + data) & 0xFFFFFFFF
                            or q[ihl + 8:ihl + 12] != p[ihl + 8:ihl + 12] or q[ihl + 14:ihl + 16] != p[ihl + 14:ihl + 16]
                            or q[ihl + 20:hl] != p[ihl + 20:hl]):
                        break
                    data += more
                    last = more
                    flags = q[ihl + 13]
                    j += 1
                    if flags & 0x08:
                        break  # PSH ends a run
                if j - i > 1:
                    total = hl + data
                    start = pos
                    out[pos:pos + VNET_HDR_LEN] = _VNET.pack(VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4,
                                                             hl, mss, ihl, 16)
                    pos += VNET_HDR_LEN
                    omv[pos:pos + hl] = p[:hl]
                    out[pos + 8] -= 1                   # TTL (the segments' TTL is left alone)
                    out[pos + 2] = total >> 8
                    out[pos + 3] = total & 0xFF
                    out[pos + 10] = out[pos + 11] = 0
                    c = _ip_csum(omv[pos:pos + ihl])
                    out[pos + 10] = c >> 8
                    out[pos + 11] = c & 0xFF
                    out[pos + ihl + 13] = flags
                    c = _pseudo_partial(p, total - ihl)
                    out[pos + ihl + 16] = c >> 8
                    out[pos + ihl + 17] = c & 0xFF
                    w = pos + hl
                    for k in range(i, j):
                        o, s = segs[k]
                        omv[w:w + s - hl] = buf[o + hl:o + s]
                        w += s - hl
                    pos = w
                    writes.append((1, start, pos))
                    i = j
                    continue
        writes.append((0, off, size))
        i += 1
    return writes
