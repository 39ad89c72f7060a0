"""The offload paths' constants and packet work (pure; no I/O): TUN virtio-net headers and
flags, UDP GSO/GRO socket options, partial checksums completed.

flannel0 is opened with IFF_VNET_HDR and TUN_F_CSUM|TUN_F_TSO4|TUN_F_TSO_ECN: every packet
carries a virtio_net_hdr; reads hand over TSO super-packets (tso.py cuts them) and packets
with partial checksums (``complete_csum`` finishes them for peers that need it); the
receiving direction writes TSO packets (gro.py).

Checksums use the identity "one's complement sum of 16-bit words == the number mod 0xFFFF",
so the summing runs in C (int.from_bytes) and never in a Python loop.
"""

from __future__ import annotations

VNET_HDR_LEN = 10
NO_VNET = bytes(VNET_HDR_LEN)  # before a packet written as it is: no GSO, no checksum to do
VIRTIO_NET_HDR_F_NEEDS_CSUM = 1
VIRTIO_NET_HDR_GSO_NONE = 0
VIRTIO_NET_HDR_GSO_TCPV4 = 1
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO_ECN = 0x08
SOL_UDP = 17
UDP_SEGMENT = 103
UDP_GRO = 104


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
