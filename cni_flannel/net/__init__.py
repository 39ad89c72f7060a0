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
    from cni_flannel.net import _nl, handle, ns

    ns.libc()

    for kind in ("link", "addr", "route", "neigh"):
        _nl.new(kind).encode()
    _rehearse()


class _Rehearsal:
    """Stands in for a netlink socket: encodes every message (and decodes it back), sends nothing."""

    def request(self, msg: object, msg_type: int, flags: int = 0, dump: bool = False, raw: bool = False) -> list:
        from cni_flannel.net import _nl

        header = msg["header"]  # type: ignore[index]
        header["type"], header["flags"], header["sequence_number"], header["pid"] = msg_type, flags | 1, 1, 0
        msg.encode()  # type: ignore[attr-defined]
        if msg_type in _nl._classes:  # (GET requests have no reply class of their own)
            _nl.decode(bytes(msg.data))  # type: ignore[attr-defined]
        return []


def _rehearse() -> None:
    """Build every kind of message a plugin sends, once, in the agent before it forks.

    pyroute2 compiles each message class's attribute tables (nested ones too: veth peer,
    bridge port data) on first use, ~5 ms apiece; a worker inherits them compiled instead of
    paying for them on every pod."""
    from cni_flannel.net.handle import Handle
    from cni_flannel.net.types import Route

    h = Handle.__new__(Handle)
    h.netns = None
    h._nl = _Rehearsal()  # type: ignore[assignment]
    steps = [
        lambda: h.add_veth("vethwarm0", "eth0", peer_netns_fd=0, mtu=1450, peer_mac="0a:58:00:00:00:01"),
        lambda: h.add_bridge("cniwarm0", mtu=1450, vlan_filtering=False, default_pvid=1),
        lambda: h.set_port(1, hairpin=True, learning=False, isolated=False),
        lambda: h.set_up(1), lambda: h.set_mtu(1, 1450), lambda: h.set_mac(1, "0a:58:00:00:00:01"),
        lambda: h.set_master(1, 2), lambda: h.set_master(1, None), lambda: h.move_to_netns(1, 0),
        lambda: h.rename(1, "eth0"), lambda: h.delete_link(1), lambda: h.set_promisc(1),
        lambda: h.add_address(1, "10.244.1.2/24"), lambda: h.add_address(1, "fd00::2/64", nodad=True),
        lambda: h.delete_address(1, "10.244.1.2/24"),
        lambda: h.add_route(Route(dst="10.244.0.0/16", gw="10.244.1.1", index=1)),
        lambda: h.add_route(Route(dst="::/0", gw="fd00::1", index=1, onlink=True), replace=True),
        lambda: h.delete_route(Route(dst="10.244.0.0/16", gw="10.244.1.1", index=1)),
        lambda: h.set_neighbour(1, "10.244.1.2", "0a:58:00:00:00:01"),
        lambda: h.set_fdb(1, "0a:58:00:00:00:01", "192.0.2.1"),
    ]
    for step in steps:
        try:
            step()
        except Exception:  # a read-back finds nothing here; a rehearsal never fails the agent
            pass
