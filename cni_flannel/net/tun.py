"""TUN devices (linux/if_tun.h) by ioctl: open one queue of a layer-3 TUN device.

    fd = open_tun("flannel0")                      # IFF_TUN | IFF_NO_PI, created if missing
    fds = [open_tun("flannel0", multi_queue=True) for _ in range(n)]   # one fd per queue

The device lives as long as one of its fds is open (not persistent, as upstream's flannel0),
so a stopped daemon leaves no dead device behind.  Failures raise ``NetFailure`` naming the
device.
"""

from __future__ import annotations

import fcntl
import os
import struct

from cni_flannel.net.errors import failure

TUNSETIFF = 0x400454CA
TUNSETOFFLOAD = 0x400454D0
TUNSETVNETHDRSZ = 0x400454D8
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFF_MULTI_QUEUE = 0x0100
IFF_VNET_HDR = 0x4000
IFNAMSIZ = 16


def open_tun(name: str, multi_queue: bool = False, nonblocking: bool = True, vnet_hdr: bool = False,
             offload: int = 0) -> int:
    """An fd reading and writing bare IP packets of TUN device ``name`` (created if missing).

    ``vnet_hdr``: every packet is preceded by a virtio_net_hdr; ``offload``: the TUN_F_* flags
    the reader can take (TUNSETOFFLOAD), e.g. TSO super-packets and partial checksums."""
    if not name or len(name.encode()) >= IFNAMSIZ or "/" in name:
        raise failure(f"TUN device {name!r}: not a valid interface name", 22)
    flags = IFF_TUN | IFF_NO_PI | (IFF_MULTI_QUEUE if multi_queue else 0) | (IFF_VNET_HDR if vnet_hdr else 0)
    try:
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC | (os.O_NONBLOCK if nonblocking else 0))
    except OSError as exc:
        raise failure(f"opening /dev/net/tun for {name}", exc.errno or 0) from None
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), flags))
        if vnet_hdr:
            fcntl.ioctl(fd, TUNSETOFFLOAD, offload)
    except OSError as exc:
        os.close(fd)
        raise failure(f"TUN device {name} ({'TUNSETOFFLOAD' if vnet_hdr else 'TUNSETIFF'})", exc.errno or 0) from None
    return fd
