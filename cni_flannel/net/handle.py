"""One network namespace's netlink handle — the interface plugins program against.

    with Handle(req.netns) as pod, Handle() as node:
        veth = node.add_veth("veth1a2b3c4d", "eth0", peer_netns_fd=fd, mtu=1450)
        pod.add_address(pod.link("eth0").index, "10.244.1.2/24")

The socket is opened inside the namespace and stays bound to it; ``sysctl``
enters the namespace for the write (see ``ns``).  Failures raise the classes
in ``net.errors``.  (No in-memory fake yet: plugin logic that needs no
kernel is kept in pure functions and unit-tested directly.)
"""

from __future__ import annotations

from typing import Any, Optional

from cni_flannel.net import _nl, ns, sysctl
from cni_flannel.net._bridge import BridgeOps
from cni_flannel.net._links import LinkOps
from cni_flannel.net._routes import RouteOps
from cni_flannel.net.errors import translate


class Handle(LinkOps, RouteOps, BridgeOps):
    """Netlink access to the namespace at ``netns`` (None/empty: the caller's own)."""

    def __init__(self, netns: Optional[str] = None) -> None:
        self.netns = netns or None
        with ns.enter(self.netns):
            with translate(f"opening netlink socket{self._where()}"):
                self._nl = _nl.Socket()

    def close(self) -> None:
        self._nl.close()

    def __enter__(self) -> "Handle":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def sysctl_get(self, key: str) -> str:
        with ns.enter(self.netns):
            return sysctl.read(key)

    def sysctl_set(self, key: str, value: str) -> None:
        with ns.enter(self.netns):
            sysctl.write(key, value)
