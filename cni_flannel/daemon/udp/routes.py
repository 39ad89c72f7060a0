"""Where a packet for an inner destination goes: the peer table (pure; no sockets).

One entry per peer lease: its subnet -> (its PublicIP, the udp Port).  Lookup is longest
prefix first: a dict per prefix length of the masked destination, so a cluster (one
SubnetLen) costs one dict lookup per packet.  The table is immutable; the backend swaps in
a new one when leases change, so the forwarding threads never see a half-updated table.
"""

from __future__ import annotations

import ipaddress
from typing import Dict, FrozenSet, Iterable, List, Optional, Tuple

Addr = Tuple[str, int]


class PeerTable:
    def __init__(self, network: str, peers: Iterable[Tuple[str, str]] = (), port: int = 8285,
                 partial_csum: Iterable[str] = ()) -> None:
        """``network``: the cluster Network; ``peers``: (subnet, public IP) pairs;
        ``partial_csum``: the public IPs of peers whose lease says they take TCP packets with
        partial checksums (tso.py), the others get full checksums."""
        self.network = ipaddress.IPv4Network(network)
        self.port = port
        by_len: Dict[int, Dict[int, Addr]] = {}
        for subnet, public_ip in peers:
            net = ipaddress.IPv4Network(subnet)
            by_len.setdefault(net.prefixlen, {})[int(net.network_address)] = (public_ip, port)
        self._levels: List[Tuple[int, Dict[int, Addr]]] = [
            ((0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF, by_len[plen]) for plen in sorted(by_len, reverse=True)]
        self.sources: FrozenSet[str] = frozenset(a[0] for _, level in self._levels for a in level.values())
        self.partial: FrozenSet[Addr] = frozenset((ip, port) for ip in partial_csum)
        self._net = int(self.network.network_address)
        self._netmask = int(self.network.netmask)

    def lookup(self, dst: int) -> Optional[Addr]:
        """The peer for the inner destination ``dst`` (an int), or None."""
        for mask, level in self._levels:
            addr = level.get(dst & mask)
            if addr is not None:
                return addr
        return None

    def in_network(self, dst: int) -> bool:
        return dst & self._netmask == self._net

    def __len__(self) -> int:
        return sum(len(level) for _, level in self._levels)
