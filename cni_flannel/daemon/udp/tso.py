"""TCP segmentation in userspace (pure; no I/O): a TSO super-packet read from flannel0 becomes
the wire's packets, laid end to end for one sendmsg(UDP_SEGMENT).

flannel0 takes TSO (TUN_F_TSO4 | TUN_F_CSUM), so one read hands over up to 64 KB of one TCP
flow instead of one 1.4 KB packet: the kernel's per-packet work (a syscall, a copy, an skb)
is paid once per ~45 segments.  Each segment gets what the kernel's tcp_gso_segment gives
it: its own IP length, id (+1 per segment), checksum and TTL − 1, its sequence number, CWR
only on the first, FIN and PSH only on the last.

The TCP checksum is the expensive part (a sum over the payload, ~4 µs per 1.4 KB segment
even with ``int.from_bytes``).  A peer that runs our forwarder with TUN offloads writes every
TCP packet into its flannel0 with NEEDS_CSUM (fastpath: the checksum is finished there, or
never needed for a local pod), so it is sent the pseudo-header sum only, as a NIC with
checksum offload would get it ("partial").  Every other peer (upstream's proxy, our plain
path) gets full checksums.  Which peers take partial checksums is in their lease
(routes.PeerTable, backends/udp.py).
"""

from __future__ import annotations

import struct
from typing import Dict, Optional, Tuple

from cni_flannel.daemon.udp.offload import complete_csum

PROTO_TCP = 6
CWR, PSH, FIN = 0x80, 0x08, 0x01
_LEN_ID = struct.Struct("!HH")
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_tables: Dict[str, memoryview] = {}
_seq_ramps: Dict[int, Tuple[int, int]] = {}


def _table(name: str) -> memoryview:
    """Every 16-bit value big-endian, counting up ("up") or down ("down") - 128 KiB each, built
    once: k consecutive IP ids (or checksums one lower each) are then one slice."""
    t = _tables.get(name)
    if t is None:
        values = range(0x10000) if name == "up" else range(0xFFFF, -1, -1)
        t = _tables[name] = memoryview(struct.pack(f">{0x10000}H", *values)).cast("H")
    return t


def seq_ramp(k: int) -> Tuple[int, int]:
    """(sum of X**j, sum of j * X**(k-1-j)) for X = 2**32, j < k: seq + j * mss for k segments,
    big-endian 32-bit words, is then ``seq * first + mss * second`` written out once."""
    r = _seq_ramps.get(k)
    if r is None:
        r = _seq_ramps[k] = (sum(1 << (32 * j) for j in range(k)), sum(j << (32 * (k - 1 - j)) for j in range(k)))
    return r


class TcpCut:
    """How the IPv4/TCP super-packet ``pkt[:n]`` splits into segments of ``mss`` payload
    bytes: ``count`` of them, ``size`` bytes each on the wire but the last (``last_size``).
    Build with :func:`plan`; ``write`` lays out any consecutive share of them."""

    __slots__ = ("pkt", "ihl", "hl", "mss", "data", "count", "size", "last_size", "_tmpl", "_ip_base",
                 "_ident", "_seq", "_flags", "_pseudo", "_mid")

    def write(self, out: bytearray, pos: int, first: int, k: int, full_csum: bool) -> int:
        """Write segments ``first`` .. ``first + k - 1`` into ``out[pos:]``; the end position."""
        pkt, ihl, hl, mss, tmpl = self.pkt, self.ihl, self.hl, self.mss, self._tmpl
        ip_base, ident0, seq0, flags, last = self._ip_base, self._ident, self._seq, self._flags, self.count - 1
        put_len_id, put16, put32 = _LEN_ID.pack_into, _U16.pack_into, _U32.pack_into
        omv = memoryview(out)  # slice assignment through a view: half a bytearray's cost
        total = hl + mss
        partial = (self._pseudo + total - ihl) % 0xFFFF or 0xFFFF
        mid = flags & ~(FIN | PSH)
        for i in range(first, first + k):
            src = hl + i * mss
            if i == last:
                total = self.last_size
                partial = (self._pseudo + total - ihl) % 0xFFFF or 0xFFFF
                mid = flags
            end = pos + total
            omv[pos:pos + hl] = tmpl
            omv[pos + hl:end] = pkt[src:src + total - hl]
            ident = (ident0 + i) & 0xFFFF
            s = (ip_base + total + ident) % 0xFFFF
            put_len_id(out, pos + 2, total, ident)
            put16(out, pos + 10, 0xFFFF - s if s else 0)
            put32(out, pos + ihl + 4, (seq0 + i * mss) & 0xFFFFFFFF)
            out[pos + ihl + 13] = mid & ~CWR if i else mid
            put16(out, pos + ihl + 16, partial)
            if full_csum:
                complete_csum(omv[pos:end], total, ihl, 16)
            pos = end
        return pos


    def headers(self, hv: memoryview, first: int, k: int) -> bool:
        """Lay the headers of segments ``first`` .. ``first + k - 1`` into ``hv[:k * hl]``, TCP
        checksums partial, with no per-segment Python: the template repeated, then the ids,
        IP checksums and sequence numbers written as three strided columns.  False (nothing
        useful written) when one of those would wrap around inside the share: ``write`` then."""
        hl, ihl, mss = self.hl, self.ihl, self.mss
        ident = (self._ident + first) & 0xFFFF
        seq = (self._seq + first * mss) & 0xFFFFFFFF
        s = (self._ip_base + hl + mss + ident) % 0xFFFF  # middle segments' IP sum; checksum = ~s
        if ident + k > 0x10000 or seq + (k - 1) * mss > 0xFFFFFFFF or s == 0 or s + k - 1 > 0xFFFE:
            return False
        hv[:k * hl] = self._mid * k
        w = hl // 2
        h16 = hv[:k * hl].cast("H")
        h16[2::w] = _table("up")[ident:ident + k]                     # id + 1 each
        h16[5::w] = _table("down")[s:s + k]                           # so the checksum - 1 each
        ones, ramp = seq_ramp(k)
        hv[:k * hl].cast("I")[(ihl + 4) // 4::hl // 4] = memoryview(
            (seq * ones + mss * ramp).to_bytes(4 * k, "big")).cast("I")  # seq + mss each
        flags = self._flags
        if first == 0 and flags & CWR:
            hv[ihl + 13] |= CWR
        if first + k == self.count:  # the packet's last segment: its length, checksums, FIN/PSH
            p = (k - 1) * hl
            total = self.last_size
            ident = (ident + k - 1) & 0xFFFF
            s = (self._ip_base + total + ident) % 0xFFFF
            _U16.pack_into(hv, p + 2, total)
            _U16.pack_into(hv, p + 10, 0xFFFF - s if s else 0)
            hv[p + ihl + 13] = flags if self.count == 1 else flags & ~CWR
            _U16.pack_into(hv, p + ihl + 16, (self._pseudo + total - ihl) % 0xFFFF or 0xFFFF)
        return True


def plan(pkt: memoryview, n: int, mss: int) -> Optional[TcpCut]:
    """The cut of the super-packet ``pkt[:n]`` (``mss``: the virtio header's gso_size); None
    when it is no IPv4/TCP packet with room for one segment, or its TTL would expire (the
    caller counts it as dropped)."""
    if n < 40 or pkt[0] >> 4 != 4 or pkt[9] != PROTO_TCP or mss <= 0 or pkt[8] <= 1:
        return None
    if (pkt[6] & 0x3F) or pkt[7] or (pkt[2] << 8 | pkt[3]) not in (n, 0):  # a fragment, or a bad length
        return None
    ihl = (pkt[0] & 0x0F) * 4
    if ihl < 20 or ihl + 20 > n:
        return None
    thl = (pkt[ihl + 12] >> 4) * 4
    hl = ihl + thl
    if thl < 20 or hl >= n:
        return None
    c = TcpCut()
    c.pkt, c.ihl, c.hl, c.mss = pkt, ihl, hl, mss
    c.data = n - hl
    c.count = -(-c.data // mss)
    c.size = hl + mss if c.count > 1 else n
    c.last_size = n - (c.count - 1) * mss
    tmpl = bytearray(pkt[:hl])
    c._ident = tmpl[4] << 8 | tmpl[5]
    c._seq = int.from_bytes(tmpl[ihl + 4:ihl + 8], "big")
    c._flags = tmpl[ihl + 13]
    tmpl[8] -= 1                                          # TTL − 1 on every segment
    tmpl[2] = tmpl[3] = tmpl[4] = tmpl[5] = tmpl[10] = tmpl[11] = 0  # per segment: length, id, checksum
    c._ip_base = int.from_bytes(tmpl[:ihl], "big") % 0xFFFF
    # the pseudo-header's addresses and protocol; its length is added per segment
    c._pseudo = (int.from_bytes(tmpl[12:20], "big") + PROTO_TCP) % 0xFFFF
    c._tmpl = bytes(tmpl)
    # the middle segments' header as ``headers`` repeats it: full length, no FIN/PSH/CWR,
    # the partial checksum of a full segment; id, IP checksum and sequence come per segment
    tmpl[2], tmpl[3] = (hl + mss) >> 8, (hl + mss) & 0xFF
    tmpl[ihl + 13] = c._flags & ~(FIN | PSH | CWR)
    partial = (c._pseudo + hl + mss - ihl) % 0xFFFF or 0xFFFF
    tmpl[ihl + 16], tmpl[ihl + 17] = partial >> 8, partial & 0xFF
    c._mid = bytes(tmpl)
    return c
