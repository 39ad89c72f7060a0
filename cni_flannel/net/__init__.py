"""Everything netlink and netns, and nothing else.

    ns        enter a namespace by path, "is it a netns", "is it mine" (stdlib only)
    handle    Handle(netns): links, veth, bridges and ports, VLANs, addresses,
              routes, neighbours/FDB, sysctls of one namespace
    types     the records a Handle returns (Link, Address, Route, Neighbour, Vlan)
    errors    NetlinkError/OSError -> CNI errors, in one place
    sysctl    /proc/sys reads and writes

Importing this package imports nothing from pyroute2; the first Handle does
(message classes only, see ``_nl``).
"""

from __future__ import annotations


def warm_up() -> None:
    """Import everything a netlink request needs now (the resident agent calls this).

    A forked worker that later joins a caller's mount namespace may no longer
    reach our files, so nothing may be imported lazily after that.
    """
    from cni_flannel.net import _nl, handle  # noqa: F401

    for kind in ("link", "addr", "route", "neigh"):
        _nl.new(kind).encode()
