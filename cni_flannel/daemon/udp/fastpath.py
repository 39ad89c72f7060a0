"""The offload variant of the forwarder's two loops (see offload.py for the why).

    flannel0 (IFF_VNET_HDR, TUN_F_CSUM|TUN_F_TSO4) --read: one TCP super-packet-->
        segment_tcp4 --> one sendmsg(UDP_SEGMENT=packet size) --> N datagrams on the wire
    socket (UDP_GRO) --recvmsg: a run of same-size datagrams--> gro_split --> N writes

Everything else (validation, peer table, TTL, unreachable, counters) is the plain loops'.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import sys
from typing import Dict, List, Tuple

from cni_flannel.daemon.udp import counters as C
from cni_flannel.daemon.udp.forwarder import BUFSIZE, Forwarder, _read_failed, inbound_drop
from cni_flannel.daemon.udp.offload import (SOL_UDP, UDP_GRO, UDP_SEGMENT, VIRTIO_NET_HDR_F_NEEDS_CSUM,
                                            VIRTIO_NET_HDR_GSO_TCPV4, VNET_HDR_LEN, complete_csum,
                                            merge_tcp4, segment_tcp4)
from cni_flannel.daemon.udp.packet import BAD_HEADER, SHORT, TTL_EXPIRED, decrement_ttl
from cni_flannel.daemon.udp.routes import PeerTable

ZERO_VNET = bytes(VNET_HDR_LEN)  # what we write before each packet: no GSO, no checksum to do
OUTSIZE = 64 * 128 + BUFSIZE     # 64 packets' headers (≤ 120 bytes each) + the payload
_VNET = struct.Struct("<BBHHHH")
_SEG = struct.Struct("=H")
MAX_UDP_PAYLOAD = 65507  # one sendmsg's limit, segments included


class OffloadForwarder(Forwarder):
    vnet_hdr = True

    def _write_tun(self, fd: int, packet: bytes) -> None:
        try:
            os.writev(fd, [ZERO_VNET, packet])
        except OSError:
            pass

    def _tun_to_udp(self) -> None:
        buf = bytearray(VNET_HDR_LEN + BUFSIZE)
        mv = memoryview(buf)
        pkt = mv[VNET_HDR_LEN:]
        out = bytearray(OUTSIZE)
        omv = memoryview(out)
        bufs = [buf]
        readv, sendto, sendmsg, route = os.readv, self.sock.sendto, self.sock.sendmsg, self._route
        unpack = _VNET.unpack_from
        pack_seg = _SEG.pack

        def drain(fd: int, table: PeerTable, drops: Dict[str, int]) -> Tuple[int, int]:
            packets = nbytes = 0
            while True:
                try:
                    n = readv(fd, bufs) - VNET_HDR_LEN
                except BlockingIOError:
                    break
                except OSError as exc:
                    _read_failed(exc, drops)
                    break
                addr = route(pkt, n, fd, table, drops)
                if addr is None:
                    continue
                flags, gso_type, _, gso_size, cstart, coff = unpack(buf, 0)
                try:
                    if gso_type == VIRTIO_NET_HDR_GSO_TCPV4:
                        seg, total = segment_tcp4(pkt, n, gso_size, out)
                        if not total:
                            why = TTL_EXPIRED if pkt[8] <= 1 else BAD_HEADER
                            drops[why] = drops.get(why, 0) + 1
                            continue
                        if seg >= total:
                            sendto(omv[:total], addr)
                            packets += 1
                        else:  # at most 64 KB per datagram "train": more packets, more sends
                            cmsg = [(SOL_UDP, UDP_SEGMENT, pack_seg(seg))]
                            chunk = MAX_UDP_PAYLOAD // seg * seg
                            for start in range(0, total, chunk):
                                sendmsg([omv[start:min(start + chunk, total)]], cmsg, 0, addr)
                            packets += (total + seg - 1) // seg
                        nbytes += total
                        continue
                    if flags & VIRTIO_NET_HDR_F_NEEDS_CSUM and not complete_csum(pkt, n, cstart, coff):
                        drops[BAD_HEADER] = drops.get(BAD_HEADER, 0) + 1
                        continue
                    if not decrement_ttl(pkt):
                        drops[TTL_EXPIRED] = drops.get(TTL_EXPIRED, 0) + 1
                        continue
                    sendto(pkt[:n], addr)
                except OSError:
                    drops[C.IO_ERROR] = drops.get(C.IO_ERROR, 0) + 1
                    continue
                packets += 1
                nbytes += n
            return packets, nbytes

        self._pump(self._tun_wakeups(), self.counters.tun_to_udp, drain)

    def _udp_to_tun(self) -> None:
        buf = bytearray(BUFSIZE)
        mv = memoryview(buf)
        bufs = [buf]
        recvmsg = self.sock.recvmsg_into
        writev, write = os.writev, os.write
        out = bytearray(OUTSIZE)
        omv = memoryview(out)
        valid: List[Tuple[int, int]] = []
        cmsg_space = socket.CMSG_SPACE(4)
        dontwait = socket.MSG_DONTWAIT
        own_net, own_mask, mtu = self.own_net, self.own_mask, self.mtu

        def drain(fd: int, table: PeerTable, drops: Dict[str, int]) -> Tuple[int, int]:
            packets = nbytes = 0
            sources = table.sources
            while True:
                try:
                    n, anc, _, src = recvmsg(bufs, cmsg_space, dontwait)
                except BlockingIOError:
                    break
                except OSError:
                    drops[C.IO_ERROR] = drops.get(C.IO_ERROR, 0) + 1
                    continue
                gso = 0
                for level, kind, data in anc:
                    if level == SOL_UDP and kind == UDP_GRO:
                        gso = int.from_bytes(data, sys.byteorder)
                if src[0] not in sources:
                    drops[C.UNKNOWN_SOURCE] = drops.get(C.UNKNOWN_SOURCE, 0) + 1
                    continue
                if n < 20:
                    drops[SHORT] = drops.get(SHORT, 0) + 1
                    continue
                step = gso if 0 < gso < n else n
                valid.clear()
                off = 0
                while off < n:
                    size = step if off + step <= n else n - off
                    why = inbound_drop(mv[off:off + size], size, own_net, own_mask, mtu)
                    if why is None:
                        valid.append((off, size))
                        nbytes += size
                    else:
                        drops[why] = drops.get(why, 0) + 1
                    off += size
                if not valid:
                    continue
                # A train of one flow's segments becomes one TSO write (the kernel carries it
                # to the pod as one packet); anything else is written packet by packet.
                writes = merge_tcp4(mv, valid, out) if len(valid) > 1 else [(0, valid[0][0], valid[0][1])]
                for merged, start, x in writes:
                    try:
                        if merged:  # merge_tcp4 decremented the TTL in the joined header
                            write(fd, omv[start:x])
                        else:
                            single = mv[start:start + x]
                            decrement_ttl(single)
                            writev(fd, [ZERO_VNET, single])
                    except OSError:
                        drops[C.IO_ERROR] = drops.get(C.IO_ERROR, 0) + 1
                packets += len(valid)
            return packets, nbytes

        self._pump(self._udp_wakeups(), self.counters.udp_to_tun, drain)


def probe_socket(sock: socket.socket) -> str:
    """'' when the socket can do UDP_SEGMENT and UDP_GRO (it is switched to GRO), else why not."""
    try:
        sock.setsockopt(SOL_UDP, UDP_SEGMENT, 0)
        sock.setsockopt(SOL_UDP, UDP_GRO, 1)
    except OSError as exc:
        return f"UDP GSO/GRO unavailable ({errno.errorcode.get(exc.errno or 0, exc.errno)})"
    return ""
