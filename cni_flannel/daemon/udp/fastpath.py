"""The offload variant of the forwarder's two directions: work per 64 KB, not per packet.

    flannel0 (TUN_F_TSO4|TUN_F_CSUM) --read: a TSO super-packet of one TCP flow-->
        tso.py cuts it into the wire's segments --> one sendmsg(UDP_SEGMENT) per ~44 of them
    socket (UDP_GRO) --recvmsg: up to 64 KB of same-size datagrams--> gro.whole_run /
        gro.tcp_runs --> one TSO write (virtio_net_hdr GSO_TCPV4, NEEDS_CSUM) per run

The sender's cost is the segments' TCP checksums (a sum over each payload: ~4 µs per 1.4 KB
in Python).  Our own peers do not need them: their flannel0 takes every TCP packet with
NEEDS_CSUM, so the kernel finishes (or, for a local pod, never needs) the sum.  Their leases
say so (BackendData PartialChecksums, backends/udp.py) and they get the pseudo-header sum
only, the headers built a share at a time (tso.TcpCut.headers); other peers (upstream's
proxy, our plain path) get full checksums from TcpCut.write.  Finished packets (ACKs, UDP,
ICMP) are batched per peer as before; their partial checksums are finished here unless the
peer takes them.  Measured numbers: bench/udp/README.md.

Everything else (validation, peer table, TTL, unreachable, counters) is the plain path's.
"""

from __future__ import annotations

import errno
import functools
import os
import socket
import struct
import sys
from typing import Dict, List, Optional, Tuple

from cni_flannel.daemon.udp import counters as C
from cni_flannel.daemon.udp.forwarder import BUFSIZE, Drain, Forwarder, _read_failed, from_peers, inbound_drop
from cni_flannel.daemon.udp.gro import ACK, continues, lone_header, run_iov, tcp_runs, tso_header, whole_run
from cni_flannel.daemon.udp.offload import (NO_VNET, SOL_UDP, TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO_ECN, UDP_GRO,
                                            UDP_SEGMENT, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4,
                                            VNET_HDR_LEN, complete_csum)
from cni_flannel.daemon.udp import tso
from cni_flannel.daemon.udp.packet import BAD_HEADER, TTL_EXPIRED, decrement_ttl
from cni_flannel.daemon.udp.routes import Addr, PeerTable

TUN_OFFLOADS = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO_ECN  # TUNSETOFFLOAD for flannel0 (see above)
_VNET = struct.Struct("<BBHHHH")
_SEG = struct.Struct("=H")
MAX_UDP_PAYLOAD = 65507  # one sendmsg's limit, segments included
MAX_SEGMENTS = 64        # the kernel's UDP_MAX_SEGMENTS is 64 (older) or 128


class OffloadForwarder(Forwarder):
    vnet_hdr = True

    def _write_tun(self, fd: int, packet: bytes) -> None:
        try:
            os.writev(fd, [NO_VNET, packet])
        except OSError:
            pass

    def _tun_to_udp_drain(self) -> Drain:
        out = bytearray(2 * BUFSIZE)  # a batch (< 64 KB) and the packet joining it
        omv = memoryview(out)
        sbuf = bytearray(BUFSIZE)     # each read: a finished packet, or a TSO super-packet to cut
        smv = memoryview(sbuf)
        vh = bytearray(VNET_HDR_LEN)
        rbufs = [vh, smv]
        readv, sendmsg, route = os.readv, self.sock.sendmsg, self._route
        pack_seg = _SEG.pack
        full = MAX_UDP_PAYLOAD - self.mtu  # past this the next packet might not fit the batch

        def send(end: int, seg: int, count: int, addr: Addr, drops: Dict[str, int], moved: List[int]) -> None:
            """Send the batch out[:end] (``count`` packets of ``seg`` bytes, the last may be
            shorter) as one datagram each; ``moved``: packets, bytes, packets sent in batches."""
            send_iov([omv[:end]], end, seg, count, addr, drops, moved)

        def send_iov(iov: List[memoryview], nbytes: int, seg: int, count: int, addr: Addr,
                     drops: Dict[str, int], moved: List[int]) -> bool:
            try:
                if count == 1:
                    sendmsg(iov, (), 0, addr)
                else:
                    sendmsg(iov, [(SOL_UDP, UDP_SEGMENT, pack_seg(seg))], 0, addr)
                    moved[2] += count
            except OSError:  # e.g. EHOSTUNREACH, ENETUNREACH: the peer's problem, not ours
                drops[C.IO_ERROR] = drops.get(C.IO_ERROR, 0) + count
                return False
            moved[0] += count
            moved[1] += nbytes
            return True

        join = b"".join
        hbuf = bytearray(MAX_SEGMENTS * 120)  # the segments' headers (IP and TCP: 60 bytes each at most)
        hmv = memoryview(hbuf)
        pieces_for: Dict[Tuple[int, int, int], List[memoryview]] = {}

        def iov_for(cut: tso.TcpCut, n: int, first: int, k: int, at: int) -> List[memoryview]:
            """header, payload, header, payload ...: segments ``first`` .. ``first + k - 1``
            of the super-packet smv[:n], their headers in hbuf from header slot ``at`` on,
            for one sendmsg (the slices are made once per header size, MSS and share)."""
            hl, mss = cut.hl, cut.mss
            key = (hl, mss, first, at)
            pieces = pieces_for.get(key)
            if pieces is None:
                if len(pieces_for) > 64:
                    pieces_for.clear()
                pieces = pieces_for[key] = []
                for j in range(min(MAX_SEGMENTS, len(hbuf) // hl - at)):
                    src = hl + (first + j) * mss
                    if src + mss > BUFSIZE:
                        break
                    pieces += (hmv[(at + j) * hl:(at + j + 1) * hl], smv[src:src + mss])
            if first + k < cut.count:
                return pieces[:2 * k]
            j = k - 1
            src = hl + (first + j) * mss
            return pieces[:2 * j] + [hmv[(at + j) * hl:(at + j + 1) * hl], smv[src:n]]

        def cut_and_send(pkt: memoryview, n: int, vh: bytearray, fd: int, table: PeerTable,
                         drops: Dict[str, int], moved: List[int]) -> None:
            """Send the TSO super-packet ``pkt[:n]`` (in sbuf) as its segments, in as few
            sendmsg as the kernel takes (65,507 bytes, MAX_SEGMENTS a call)."""
            _, gso_type, _, mss, _, _ = _VNET.unpack_from(vh, 0)
            addr = route(pkt, n, fd, table, drops)
            if addr is None:
                return
            tcp4 = gso_type & 0x7F == VIRTIO_NET_HDR_GSO_TCPV4
            cut = tso.plan(pkt, n, mss) if tcp4 else None
            if cut is None:
                why = TTL_EXPIRED if tcp4 and n >= 40 and pkt[0] >> 4 == 4 and pkt[8] <= 1 else BAD_HEADER
                drops[why] = drops.get(why, 0) + 1
                return
            partial = addr in table.partial
            per_send = min(MAX_SEGMENTS, MAX_UDP_PAYLOAD // cut.size)
            # every header at once where they fit hbuf (a 64 KB packet: ~46), else per share
            whole = partial and cut.count * cut.hl <= len(hbuf) and cut.headers(hmv, 0, cut.count)
            i = 0
            while i < cut.count:
                k = min(cut.count - i, per_send)
                if whole or (partial and cut.headers(hmv, i, k)):
                    size = k * cut.hl + (min(n, cut.hl + (i + k) * mss) - cut.hl - i * mss)
                    # one buffer: the kernel copies 88 small pieces slower than join does
                    iov = iov_for(cut, n, i, k, i if whole else 0)
                    if send_iov([join(iov)], size, cut.size, k, addr, drops, moved):
                        moved[3] += k
                else:  # full checksums (a peer without our offloads), or a field wraps
                    end = cut.write(out, 0, i, k, not partial)
                    send(end, cut.size, k, addr, drops, moved)
                i += k

        def drain(fd: int, table: PeerTable, drops: Dict[str, int]) -> List[int]:
            moved = [0, 0, 0, 0]
            pos = seg = count = 0        # the batch: out[:pos], ``count`` packets for ``addr``
            dst = b""
            addr: Optional[Addr] = None
            while True:
                try:
                    n = readv(fd, rbufs) - VNET_HDR_LEN
                except BlockingIOError:
                    break
                except OSError as exc:
                    _read_failed(exc, drops)
                    break
                if n < 20 or sbuf[0] >> 4 != 4:  # counted (short, not IPv4); the batch goes on
                    route(smv, n, fd, table, drops)
                    continue
                if vh[1]:  # a TSO super-packet: the batch so far leaves, then its segments
                    if count:
                        send(pos, seg, count, addr, drops, moved)  # type: ignore[arg-type]
                        pos = count = 0
                    cut_and_send(smv, n, vh, fd, table, drops, moved)
                    continue
                omv[pos:pos + n] = smv[:n]  # a finished packet joins the batch
                here = out[pos + 16:pos + 20]
                if count and (here != dst or n > seg):  # another peer, or no longer one train
                    send(pos, seg, count, addr, drops, moved)  # type: ignore[arg-type]
                    omv[:n] = omv[pos:pos + n]
                    pos = count = 0
                if not count:
                    addr = route(omv, n, fd, table, drops)
                    if addr is None:
                        continue
                    dst, seg = here, n
                if vh[0] & VIRTIO_NET_HDR_F_NEEDS_CSUM:  # TUN_F_CSUM: the checksum is ours to finish
                    _, _, _, _, cstart, coff = _VNET.unpack_from(vh, 0)
                    # ... unless it is TCP for a peer that finishes it (as its flannel0 does)
                    if out[pos + 9] == tso.PROTO_TCP and coff == 16 and addr in table.partial:
                        moved[3] += 1
                    elif not complete_csum(omv[pos:pos + n], n, cstart, coff):
                        drops[BAD_HEADER] = drops.get(BAD_HEADER, 0) + 1
                        continue
                ttl = out[pos + 8]
                if ttl <= 1:
                    drops[TTL_EXPIRED] = drops.get(TTL_EXPIRED, 0) + 1
                    continue
                # TTL - 1 with the header checksum fixed incrementally (packet.decrement_ttl)
                out[pos + 8] = ttl - 1
                s = ((out[pos + 10] << 8 | out[pos + 11]) ^ 0xFFFF) + 0xFEFF
                s = ~((s & 0xFFFF) + (s >> 16)) & 0xFFFF
                out[pos + 10] = s >> 8
                out[pos + 11] = s & 0xFF
                pos += n
                count += 1
                if n < seg or count >= MAX_SEGMENTS or pos > full:
                    send(pos, seg, count, addr, drops, moved)  # type: ignore[arg-type]
                    pos = count = 0
            if count:
                send(pos, seg, count, addr, drops, moved)  # type: ignore[arg-type]
            return moved

        return drain

    def _udp_to_tun_drain(self) -> Drain:
        # Two receive buffers: a whole run waiting for its continuation (gro.continues) stays
        # in one while the next datagram train lands in the other.
        bufs = (bytearray(BUFSIZE), bytearray(BUFSIZE))
        mvs = (memoryview(bufs[0]), memoryview(bufs[1]))
        recvs = tuple(functools.partial(self.sock.recvmsg_into, [b], socket.CMSG_SPACE(4), socket.MSG_DONTWAIT)
                      for b in bufs)
        into = [0]  # the buffer the next train goes into
        writev = os.writev
        own_net, own_mask, mtu = self.own_net, self.own_mask, self.mtu

        def recv() -> Tuple[int, list, int, Addr]:
            return recvs[into[0]]()

        def write(mv: memoryview, fd: int, off: int, size: int, count: int, n: int, step: int,
                  drops: Dict[str, int], more: Optional[Tuple[memoryview, int]] = None) -> int:
            """Write ``count`` datagrams from mv[off:] (``size`` bytes the first) to flannel0:
            one packet as it is, a run as one TSO packet (with ``more``: (buffer, length),
            a whole run continuing it); the packets written."""
            why = inbound_drop(mv[off:off + size], size, own_net, own_mask, mtu)
            if why is not None:  # a run's segments repeat the first one's header
                drops[why] = drops.get(why, 0) + count
                return 0
            try:
                if count == 1 and more is None:
                    one = mv[off:off + size]
                    decrement_ttl(one)  # cannot fail: inbound_drop checked the TTL
                    writev(fd, [lone_header(mv, off, size), one])
                    return 1
                hl = 20 + (mv[off + 32] >> 4) * 4
                first = off // step
                last = (first + count - 1) * step
                if first == 0 and last + step >= n:  # the whole buffer: payload slices made once
                    iov = payloads_of(mv, step, hl)[:count - 1]
                    iov.append(mv[last + hl:n])
                else:
                    iov = run_iov(mv, n, step, first, count)
                payload = min(n, last + step) - off - count * hl
                flags = mv[last + 33]
                if more is not None:  # ``mv``'s run is all full-size: then ``more``'s
                    q, q_n = more
                    q_count = -(-q_n // step)
                    q_last = (q_count - 1) * step
                    iov += payloads_of(q, step, hl)[:q_count - 1]
                    iov.append(q[q_last + hl:q_n])
                    payload += q_n - q_count * hl
                    flags = q[q_last + 33]
                    count += q_count
                writev(fd, [tso_header(mv, off, payload, flags)] + iov)
            except OSError:
                drops[C.IO_ERROR] = drops.get(C.IO_ERROR, 0) + count
                return 0
            return count

        slices: Dict[Tuple[int, int, int], Tuple[List[memoryview], List[memoryview]]] = {}

        def slices_of(mv: memoryview, step: int, hl: int) -> Tuple[List[memoryview], List[memoryview]]:
            """The buffer's headers and payloads for datagrams of ``step`` bytes with ``hl``-byte
            headers: memoryview slices made once per buffer, step and hl, not once per run."""
            key = (0 if mv is mvs[0] else 1, step, hl)
            got = slices.get(key)
            if got is None:
                if len(slices) > 64:
                    slices.clear()
                offs = range(0, BUFSIZE - step + 1, step)
                got = slices[key] = ([mv[o:o + hl] for o in offs], [mv[o + hl:o + step] for o in offs])
            return got

        def payloads_of(mv: memoryview, step: int, hl: int) -> List[memoryview]:
            return slices_of(mv, step, hl)[1]

        def drain(fd: int, table: PeerTable, drops: Dict[str, int]) -> Tuple[int, int, int]:
            moved = [0, 0, 0]  # packets, bytes, batched
            held: Optional[Tuple[memoryview, int, int, Addr]] = None  # a whole run: buffer, length, step, peer

            def put(mv: memoryview, off: int, count: int, n: int, step: int,
                    more: Optional[Tuple[memoryview, int]] = None) -> None:
                done = write(mv, fd, off, min(step, n - off), count, n, step, drops, more)
                if done:
                    moved[0] += done
                    moved[1] += min(n, off + count * step) - off + (more[1] if more else 0)
                    moved[2] += done if done > 1 else 0

            for n, anc, _, peer in from_peers(recv, table.sources, drops):
                mv = mvs[into[0]]
                gso = 0
                for level, kind, data in anc:
                    if level == SOL_UDP and kind == UDP_GRO:
                        gso = int.from_bytes(data, sys.byteorder)
                hl = 20 + (mv[32] >> 4) * 4 if n >= 40 and mv[0] == 0x45 else 0
                whole = (0 < gso < n and 40 <= hl < gso and whole_run(mv, n, gso, slices_of(mv, gso, hl)[0]))
                if held is not None:
                    p, p_n, p_step, p_peer = held
                    held = None
                    if whole and p_step == gso and p_peer == peer and 20 + (p[32] >> 4) * 4 == hl \
                            and continues(p, p_n, mv, n, gso):
                        put(p, 0, p_n // gso, p_n, gso, (mv, n))
                        continue
                    put(p, 0, p_n // p_step, p_n, p_step)
                if not 0 < gso < n:
                    put(mv, 0, 1, n, n or 1)
                    continue
                if whole:
                    count = -(-n // gso)
                    if n == count * gso and mv[n - gso + 33] == ACK:  # full-size, no PSH: may go on
                        held = (mv, n, gso, peer)
                        into[0] ^= 1
                        continue
                    runs: List[Tuple[int, int]] = [(0, count)]
                else:
                    runs = tcp_runs(mv, n, gso)
                for first, count in runs:
                    put(mv, first * gso, count, n, gso)
            if held is not None:
                p, p_n, p_step, _ = held
                put(p, 0, p_n // p_step, p_n, p_step)
            return moved

        return drain


def probe_socket(sock: socket.socket) -> str:
    """'' when the socket can do UDP_SEGMENT and UDP_GRO (it is switched to GRO), else why not."""
    try:
        sock.setsockopt(SOL_UDP, UDP_SEGMENT, 0)
        sock.setsockopt(SOL_UDP, UDP_GRO, 1)
    except OSError as exc:
        return f"UDP GSO/GRO unavailable ({errno.errorcode.get(exc.errno or 0, exc.errno)})"
    return ""
