"""Everything netlink and netns, and nothing else.

    ns        enter a namespace by path, "is it a netns", "is it mine" (stdlib only)
    handle    Handle(netns): links, veth, bridges and ports, VLANs, addresses,
              routes, neighbours/FDB, sysctls of one namespace
    types     the records a Handle returns (Link, Address, Route, Neighbour, Vlan)
    errors    NetlinkError/OSError -> CNI errors, in one place
    sysctl    /proc/sys reads and writes
    fake      FakeHandle: the same interface in memory, for unit tests

Importing this package imports nothing from pyroute2; the first Handle does
(message classes only, see ``_nl``).
"""

from __future__ import annotations
