"""TCP GRO in userspace (pure; no I/O): a UDP_GRO buffer of one TCP flow's segments becomes
one TSO super-packet for flannel0.

With UDP_GRO the receiving socket hands over up to 64 KB of back-to-back datagrams of one
size (``step``; the last one may be shorter), each one inner IPv4 packet.  Writing them one
by one costs a syscall and a trip through the stack each.  ``tcp_runs`` finds the runs of
consecutive segments of one TCP flow and ``tso_header`` builds the virtio_net_hdr and joined
IP/TCP header for a run, so the whole run is written once (GSO_TCPV4, NEEDS_CSUM: the kernel
or the receiving socket finishes the checksum) — what wireguard-go and Tailscale do.

The work is per buffer, not per segment: one ``struct.unpack_from`` reads every segment's
header fields at once (a format with padding between the headers), and each rule is one
comparison of a tuple slice across all segments.  The rules are the kernel's GRO rules:
same IP header apart from length, id and checksum (IHL 5, no fragment bits); same ports,
ACK, data offset, window, urgent pointer and options; sequence numbers back to back; every
segment full size but the last; no flag but ACK (PSH allowed on the last one).  The first
segment of a run is validated in full by the caller (inbound_drop); the others must repeat
its header, so they are valid too.  Their own checksums are not re-verified: the outer UDP
checksum already covered the datagram on the wire.
"""

from __future__ import annotations

import struct
from typing import Dict, List, Sequence, Tuple

from cni_flannel.daemon.udp.offload import NO_VNET, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4
from cni_flannel.daemon.udp.tso import seq_ramp

Buffer = memoryview
PROTO_TCP = 6
ACK, PSH = 0x10, 0x08
MAX_IP_PACKET = 65535
_SEQ_MOD = 1 << 32

# Per segment: total length, sequence number and flags (the fields a run changes on purpose),
# and the header pieces between the fields a run may change (length, id, IP checksum, sequence
# number, flags, TCP checksum), which must repeat the first segment's.
_VARYING = "2xH20xI5xB"          # 34 bytes: up to the TCP flags
_SAME = "2s4x4s2x12s4x5s1x2s2x"  # 40 bytes, then the urgent pointer and options
_PIECES = 6
_VNET = struct.Struct("<BBHHHH")
_join = b"".join
_ZEROS16 = memoryview(bytes(2 * 128)).cast("H")
_cache: Dict[Tuple[int, int, int], Tuple[struct.Struct, struct.Struct]] = {}


def _readers(step: int, hl: int, count: int) -> Tuple[struct.Struct, struct.Struct]:
    """For ``count`` segments ``step`` bytes apart with ``hl``-byte headers: a Struct reading
    every segment's (length, seq, flags), and one reading the pieces that must repeat."""
    key = (step, hl, count)
    r = _cache.get(key)
    if r is None:
        varying = struct.Struct("!" + f"{step - 34}x".join([_VARYING] * count))
        same = struct.Struct("!" + f"{step - hl}x".join([f"{_SAME}{hl - 38}s"] * count))
        r = (varying, same)
        if len(_cache) > 256:  # MSS, option sizes and counts vary little; never grow unbounded
            _cache.clear()
        _cache[key] = r
    return r


def _run_length(buf: Buffer, n: int, step: int, first: int, count: int) -> int:
    """How many datagrams from index ``first`` form one run (1: write it alone)."""
    off = first * step
    if (count - first < 2 or buf[off] != 0x45 or buf[off + 9] != PROTO_TCP or step < 41
            or buf[off + 6] & 0x3F or buf[off + 7] or buf[off + 33] != ACK):
        return 1
    thl = (buf[off + 32] >> 4) * 4
    hl = 20 + thl
    last_size = n - (count - 1) * step
    k = count - first if last_size > hl else count - first - 1  # a bare header cannot join
    if thl < 20 or hl >= step or k < 2:
        return 1
    varying, same = _readers(step, hl, k)
    limit = k
    pieces = same.unpack_from(buf, off)
    first_pieces = pieces[:_PIECES]
    if pieces != first_pieces * k:  # one compare for all: found, then where it breaks
        limit = next(j for j in range(1, k) if pieces[j * _PIECES:(j + 1) * _PIECES] != first_pieces)
    t = varying.unpack_from(buf, off)
    # each IP length must be its datagram's: ``step``, or ``last_size`` for the buffer's last
    lens = t[0::3]
    sizes = (step,) * (k - 1) + ((last_size,) if first + k == count else (step,))
    if lens != sizes:
        limit = min(limit, next(j for j in range(k) if lens[j] != sizes[j]))
    flags = t[2::3]
    if flags.count(ACK) != k:
        j = next(j for j in range(k) if flags[j] != ACK)
        limit = min(limit, j + 1 if flags[j] == ACK | PSH else j)
    mss = step - hl
    seq0 = t[1]
    seqs = t[1::3]
    if seq0 + k * mss < _SEQ_MOD:
        want: Sequence[int] = range(seq0, seq0 + k * mss, mss)
    else:
        want = [(seq0 + j * mss) % _SEQ_MOD for j in range(k)]
    if seqs != tuple(want):
        limit = min(limit, next(j for j in range(k) if seqs[j] != want[j]))
    return max(limit, 1)


def tcp_runs(buf: Buffer, n: int, step: int) -> List[Tuple[int, int]]:
    """Split the GRO buffer ``buf[:n]`` (datagrams of ``step`` bytes, the last may be shorter)
    into runs: (index of the first datagram, how many); a run of one is written alone."""
    count = -(-n // step)
    runs: List[Tuple[int, int]] = []
    i = 0
    while i < count:
        r = _run_length(buf, n, step, i, count)
        runs.append((i, r))
        i += r
    return runs


def whole_run(buf: Buffer, n: int, step: int, headers: Sequence[Buffer]) -> bool:
    """True when the whole GRO buffer ``buf[:n]`` is one run (what a TSO send of ours, or a
    kernel's, gives): the fast check, a few block operations instead of a field per segment.
    ``headers``: slices of ``buf`` at every ``step``, each as long as the first header.

    Every segment's header must be the first one's, apart from the id, both checksums (not
    compared, as tcp_runs), the sequence number (+MSS each), and the last segment's length
    and PSH.  False says nothing: tcp_runs then finds the runs."""
    count = -(-n // step)
    if (count < 2 or count > len(headers) or buf[0] != 0x45 or buf[9] != PROTO_TCP or buf[6] & 0x3F
            or buf[7] or buf[33] != ACK):
        return False
    hl = 20 + (buf[32] >> 4) * 4
    last_size = n - (count - 1) * step
    last = (count - 1) * step
    if hl != len(headers[0]) or hl < 40 or hl >= step or last_size <= hl or buf[last + 33] not in (ACK, ACK | PSH):
        return False
    mss = step - hl
    seq0 = int.from_bytes(buf[24:28], "big")
    if seq0 + (count - 1) * mss >= _SEQ_MOD:
        return False  # the sequence numbers wrap inside: tcp_runs
    first = bytearray(buf[:hl])
    first[4] = first[5] = first[10] = first[11] = first[36] = first[37] = 0
    want = bytearray(first * count)
    ones, ramp = seq_ramp(count)
    memoryview(want).cast("I")[6::hl // 4] = memoryview((seq0 * ones + mss * ramp).to_bytes(4 * count, "big")).cast("I")
    want[(count - 1) * hl + 2:(count - 1) * hl + 4] = last_size.to_bytes(2, "big")
    want[(count - 1) * hl + 33] = buf[last + 33]
    got = bytearray(_join(headers[:count]))
    got16 = memoryview(got).cast("H")
    zeros = _ZEROS16[:count]
    w = hl // 2
    for col in (2, 5, 18):  # id, IP checksum, TCP checksum: not compared
        got16[col::w] = zeros
    return got == want


def continues(p: Buffer, p_n: int, q: Buffer, q_n: int, step: int) -> bool:
    """Whether the whole run in ``q[:q_n]`` (whole_run said so) carries on the whole run in
    ``p[:p_n]`` (its segments all full-size, the last ACK only) as one TSO packet: the same
    flow and header (id and checksums aside, as the kernel's GRO), the sequence number right
    after p's last segment, and both together within 64 KB.  The two halves of one TSO
    super-packet a sender had to send in two datagram trains (65,507 bytes a sendmsg) are
    written into flannel0 as one packet again: one trip through the stack, one ACK."""
    hl = 20 + (p[32] >> 4) * 4
    mss = step - hl
    count_p = p_n // step
    q_count = -(-q_n // step)
    if hl + count_p * mss + q_n - q_count * hl > MAX_IP_PACKET:
        return False
    if int.from_bytes(q[24:28], "big") != (int.from_bytes(p[24:28], "big") + count_p * mss) % _SEQ_MOD:
        return False
    return (q[0:2] == p[0:2] and q[6:10] == p[6:10] and q[12:24] == p[12:24] and q[28:33] == p[28:33]
            and q[34:36] == p[34:36] and q[38:hl] == p[38:hl])


def tso_header(buf: Buffer, off: int, payload: int, last_flags: int) -> bytes:
    """The virtio_net_hdr and joined IP/TCP header for a run whose first segment is at
    ``buf[off:]`` and whose payloads total ``payload`` bytes: total length, TTL − 1, a fresh
    IP checksum, the last segment's flags, and the pseudo-header sum in the TCP checksum."""
    thl = (buf[off + 32] >> 4) * 4
    hl = 20 + thl
    mss = int.from_bytes(buf[off + 2:off + 4], "big") - hl
    total = hl + payload
    h = bytearray(buf[off:off + hl])
    h[2], h[3] = total >> 8, total & 0xFF
    h[8] -= 1
    h[10] = h[11] = 0
    s = int.from_bytes(h[:20], "big") % 0xFFFF
    c = ~s & 0xFFFF if s else 0
    h[10], h[11] = c >> 8, c & 0xFF
    h[33] = last_flags
    s = (int.from_bytes(h[12:20], "big") + PROTO_TCP + total - 20) % 0xFFFF or 0xFFFF
    h[36], h[37] = s >> 8, s & 0xFF
    vnet = _VNET.pack(VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4, hl, mss, 20, 16)
    return vnet + bytes(h)


def lone_header(buf: Buffer, off: int, size: int) -> bytes:
    """The virtio_net_hdr for one packet ``buf[off:off + size]`` written alone: for a TCP
    packet (no fragment) NEEDS_CSUM, with the pseudo-header sum put in its checksum field
    (its sender may have sent a partial checksum, tso.py); for anything else none."""
    ihl = (buf[off] & 0x0F) * 4
    if buf[off + 9] != PROTO_TCP or buf[off + 6] & 0x3F or buf[off + 7] or size < ihl + 20:
        return NO_VNET
    s = (int.from_bytes(buf[off + 12:off + 20], "big") + PROTO_TCP + size - ihl) % 0xFFFF or 0xFFFF
    at = off + ihl + 16
    buf[at], buf[at + 1] = s >> 8, s & 0xFF
    return _VNET.pack(VIRTIO_NET_HDR_F_NEEDS_CSUM, 0, 0, 0, ihl, 16)


def run_iov(mv: Buffer, n: int, step: int, first: int, count: int) -> List[Buffer]:
    """The run's payloads as memoryview slices (for writev after its tso_header)."""
    off = first * step
    hl = 20 + (mv[off + 32] >> 4) * 4
    last = off + (count - 1) * step
    iov = [mv[o:o + step - hl] for o in range(off + hl, last, step)]
    iov.append(mv[last + hl:min(n, last + step)])
    return iov
