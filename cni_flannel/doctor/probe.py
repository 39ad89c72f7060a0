"""Ping each peer's VTEP address over the overlay: one raw ICMP socket per family, every
request sent at once, answers collected until one shared deadline (bounded: ``timeout``
seconds in all, however many peers)."""

from __future__ import annotations

import ipaddress
import os
import select
import socket
import time
from typing import Dict, List, Sequence, Tuple

from cni_flannel.net import icmp

from .facts import Probe

PAYLOAD = b"flanneld doctor probe"


def probe(targets: Sequence[Tuple[str, str]], timeout: float = 1.0) -> List[Probe]:
    """targets: (peer subnet, address to ping). Results in the same order."""
    ident = os.getpid() & 0xFFFF
    sent: Dict[Tuple[int, str, int], float] = {}
    results: Dict[int, Probe] = {}
    socks: Dict[int, socket.socket] = {}
    try:
        for seq, (peer, target) in enumerate(targets, 1):
            version = ipaddress.ip_address(target).version
            try:
                if version not in socks:
                    family, proto = ((socket.AF_INET, socket.IPPROTO_ICMP) if version == 4
                                     else (socket.AF_INET6, socket.IPPROTO_ICMPV6))
                    socks[version] = socket.socket(family, socket.SOCK_RAW, proto)
                socks[version].sendto(icmp.echo_request(version, ident, seq, PAYLOAD), (target, 0))
                sent[(version, target, seq)] = time.monotonic()
            except OSError as exc:
                results[seq] = Probe(peer, target, None, exc.strerror or str(exc))
        deadline = time.monotonic() + timeout
        while len(results) < len(targets):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            ready, _, _ = select.select(list(socks.values()), [], [], left)
            for sock in ready:
                version = 4 if sock.family == socket.AF_INET else 6
                data, addr = sock.recvfrom(65535)
                reply = icmp.echo_reply(version, data)
                if reply is None:
                    continue
                rid, rseq = reply
                key = (version, addr[0], rseq)
                if rid == ident and key in sent and rseq not in results:
                    peer = targets[rseq - 1][0]
                    results[rseq] = Probe(peer, addr[0], (time.monotonic() - sent[key]) * 1000.0)
    finally:
        for sock in socks.values():
            sock.close()
    return [results.get(i, Probe(peer, target, None, f"no reply within {timeout:g} s"))
            for i, (peer, target) in enumerate(targets, 1)]
