"""Link operations of :class:`cni_flannel.net.handle.Handle` (mixin)."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Union

from cni_flannel.net import _linkparse, _nl
from cni_flannel.net.errors import NotFound, translate
from cni_flannel.net.types import IFF_PROMISC, IFF_UP, Link, VxlanInfo

LinkRef = Union[int, str]

_PORT_FLAGS = {"hairpin": "IFLA_BRPORT_MODE", "learning": "IFLA_BRPORT_LEARNING",
               "isolated": "IFLA_BRPORT_ISOLATED"}


def _to_vxlan(data: Any) -> VxlanInfo:
    return VxlanInfo(vni=data.get_attr("IFLA_VXLAN_ID") or 0,
                     local=data.get_attr("IFLA_VXLAN_LOCAL") or data.get_attr("IFLA_VXLAN_LOCAL6"),
                     port=data.get_attr("IFLA_VXLAN_PORT") or 0,
                     learning=bool(data.get_attr("IFLA_VXLAN_LEARNING")),
                     gbp=data.get_attr("IFLA_VXLAN_GBP") is not None,
                     link=data.get_attr("IFLA_VXLAN_LINK") or 0)


def _to_link(msg: Any) -> Link:
    info = _nl.attr(msg, "IFLA_LINKINFO")
    kind = ""
    port: Dict[str, int] = {}
    vlan_filtering = None
    vxlan = None
    if info is not None:
        kind = info.get_attr("IFLA_INFO_KIND") or ""
        if info.get_attr("IFLA_INFO_SLAVE_KIND") == "bridge":
            data = info.get_attr("IFLA_INFO_SLAVE_DATA")
            if data is not None:
                for key, nla in _PORT_FLAGS.items():
                    value = data.get_attr(nla)
                    if value is not None:
                        port[key] = int(value)
        if kind == "bridge":
            data = info.get_attr("IFLA_INFO_DATA")
            if data is not None and data.get_attr("IFLA_BR_VLAN_FILTERING") is not None:
                vlan_filtering = bool(data.get_attr("IFLA_BR_VLAN_FILTERING"))
        if kind == "vxlan" and info.get_attr("IFLA_INFO_DATA") is not None:
            vxlan = _to_vxlan(info.get_attr("IFLA_INFO_DATA"))
    return Link(index=msg["index"], name=_nl.attr(msg, "IFLA_IFNAME", ""), kind=kind,
                mac=_nl.attr(msg, "IFLA_ADDRESS", "") or "", mtu=_nl.attr(msg, "IFLA_MTU", 0),
                flags=msg["flags"], master=_nl.attr(msg, "IFLA_MASTER", 0) or 0,
                peer_netnsid=_nl.attr(msg, "IFLA_LINK_NETNSID"), port=port,
                vlan_filtering=vlan_filtering,
                operstate=str(_nl.attr(msg, "IFLA_OPERSTATE", "") or ""), vxlan=vxlan)


def _link_of(chunk: bytes) -> Link:
    """Our own reader for the attributes Link holds; pyroute2's full decode where it declines."""
    link = _linkparse.parse(chunk)
    return link if link is not None else _to_link(_nl.decode(chunk))


class LinkOps:
    netns: Optional[str]
    _nl: "_nl.Socket"

    def _where(self) -> str:
        return f" in netns {self.netns!r}" if self.netns else ""

    # --- reading -----------------------------------------------------------
    def links(self) -> List[Link]:
        with translate(f"listing links{self._where()}"):
            return [_link_of(m) for m in self._nl.request(_nl.new("link"), _nl.RTM_GETLINK, dump=True, raw=True)]

    def link(self, ref: LinkRef) -> Link:
        """The link named or numbered ``ref``; NotFound when there is none."""
        msg = _nl.new("link")
        if isinstance(ref, int):
            msg["index"] = ref
        else:
            msg["attrs"] = [["IFLA_IFNAME", ref]]
        with translate(f"link {ref!r}{self._where()}"):
            replies = self._nl.request(msg, _nl.RTM_GETLINK, raw=True)
        if not replies:
            raise NotFound(f"link {ref!r}{self._where()}: no such device")
        return _link_of(replies[0])

    def find_link(self, ref: LinkRef) -> Optional[Link]:
        """Like :meth:`link` but None when it does not exist."""
        try:
            return self.link(ref)
        except NotFound:
            return None

    # --- changing ----------------------------------------------------------
    def _setlink(self, ref: LinkRef, what: str, flags: int = 0, change: int = 0,
                 attrs: Optional[List[list]] = None) -> None:
        link = self.link(ref) if isinstance(ref, str) else None
        index = link.index if link else ref
        msg = _nl.new("link", index=index, flags=flags, change=change, attrs=attrs or [])
        with translate(f"{what} of link {ref!r}{self._where()}"):
            self._nl.request(msg, _nl.RTM_NEWLINK)

    def set_up(self, ref: LinkRef, up: bool = True) -> None:
        self._setlink(ref, "setting up" if up else "setting down",
                      flags=IFF_UP if up else 0, change=IFF_UP)

    def set_promisc(self, ref: LinkRef, on: bool = True) -> None:
        self._setlink(ref, "setting promisc", flags=IFF_PROMISC if on else 0, change=IFF_PROMISC)

    def set_mtu(self, ref: LinkRef, mtu: int) -> None:
        self._setlink(ref, f"setting MTU {mtu}", attrs=[["IFLA_MTU", mtu]])

    def set_mac(self, ref: LinkRef, mac: str) -> None:
        self._setlink(ref, f"setting MAC {mac}", attrs=[["IFLA_ADDRESS", mac.lower()]])

    def set_master(self, ref: LinkRef, master: Optional[LinkRef]) -> None:
        """Attach ``ref`` to bridge ``master`` (None: detach)."""
        index = 0 if master is None else (master if isinstance(master, int)
                                          else self.link(master).index)
        self._setlink(ref, f"setting master {master!r}", attrs=[["IFLA_MASTER", index]])

    def rename(self, ref: LinkRef, name: str) -> None:
        self._setlink(ref, f"renaming to {name!r}", attrs=[["IFLA_IFNAME", name]])

    def move_to_netns(self, ref: LinkRef, netns_fd: int) -> None:
        self._setlink(ref, "moving to another netns", attrs=[["IFLA_NET_NS_FD", netns_fd]])

    def delete_link(self, ref: LinkRef) -> None:
        """Delete ``ref``; NotFound when it is already gone."""
        index = ref if isinstance(ref, int) else self.link(ref).index
        with translate(f"deleting link {ref!r}{self._where()}"):
            self._nl.request(_nl.new("link", index=index), _nl.RTM_DELLINK)

    def _newlink(self, name: str, what: str, attrs: List[list]) -> Link:
        msg = _nl.new("link", attrs=[["IFLA_IFNAME", name]] + attrs)
        with translate(f"creating {what} {name!r}{self._where()}"):
            self._nl.request(msg, _nl.RTM_NEWLINK, _nl.NLM_F_CREATE | _nl.NLM_F_EXCL)
        return self.link(name)

    def add_bridge(self, name: str, mtu: int = 0, vlan_filtering: Optional[bool] = None,
                   default_pvid: Optional[int] = None) -> Link:
        data: List[list] = []
        if vlan_filtering is not None:
            data.append(["IFLA_BR_VLAN_FILTERING", int(vlan_filtering)])
        if default_pvid is not None:
            data.append(["IFLA_BR_VLAN_DEFAULT_PVID", default_pvid])
        info: List[list] = [["IFLA_INFO_KIND", "bridge"]]
        if data:
            info.append(["IFLA_INFO_DATA", {"attrs": data}])
        attrs = [["IFLA_LINKINFO", {"attrs": info}]]
        if mtu:
            attrs.append(["IFLA_MTU", mtu])
        return self._newlink(name, "bridge", attrs)

    def set_bridge(self, ref: LinkRef, vlan_filtering: Optional[bool] = None,
                   default_pvid: Optional[int] = None) -> None:
        data: List[list] = []
        if vlan_filtering is not None:
            data.append(["IFLA_BR_VLAN_FILTERING", int(vlan_filtering)])
        if default_pvid is not None:
            data.append(["IFLA_BR_VLAN_DEFAULT_PVID", default_pvid])
        info = [["IFLA_INFO_KIND", "bridge"], ["IFLA_INFO_DATA", {"attrs": data}]]
        self._setlink(ref, "configuring bridge", attrs=[["IFLA_LINKINFO", {"attrs": info}]])

    def add_veth(self, name: str, peer: str, peer_netns_fd: Optional[int] = None, mtu: int = 0,
                 mac: Optional[str] = None, peer_mac: Optional[str] = None) -> Link:
        """Create veth ``name`` here with its ``peer`` in the namespace ``peer_netns_fd``."""
        peer_attrs: List[list] = [["IFLA_IFNAME", peer]]
        if mtu:
            peer_attrs.append(["IFLA_MTU", mtu])
        if peer_mac:
            peer_attrs.append(["IFLA_ADDRESS", peer_mac.lower()])
        if peer_netns_fd is not None:
            peer_attrs.append(["IFLA_NET_NS_FD", peer_netns_fd])
        info = [["IFLA_INFO_KIND", "veth"],
                ["IFLA_INFO_DATA", {"attrs": [["VETH_INFO_PEER", {"attrs": peer_attrs}]]}]]
        attrs: List[list] = [["IFLA_LINKINFO", {"attrs": info}]]
        if mtu:
            attrs.append(["IFLA_MTU", mtu])
        if mac:
            attrs.append(["IFLA_ADDRESS", mac.lower()])
        return self._newlink(name, f"veth pair (peer {peer!r})", attrs)

    def add_vxlan(self, name: str, vni: int, local: Optional[str] = None, port: int = 0,
                  learning: bool = True, gbp: bool = False, link: int = 0, mtu: int = 0,
                  mac: Optional[str] = None) -> Link:
        """`ip link add <name> type vxlan id <vni> [local <ip>] [dstport <port>] [nolearning]
        [gbp] [dev <link>]` — no group or remote: the FDB says where each MAC lives."""
        data: List[list] = [["IFLA_VXLAN_ID", vni], ["IFLA_VXLAN_LEARNING", int(learning)]]
        if local:
            data.append(["IFLA_VXLAN_LOCAL6" if ":" in local else "IFLA_VXLAN_LOCAL", local])
        if port:
            data.append(["IFLA_VXLAN_PORT", port])
        if gbp:
            data.append(["IFLA_VXLAN_GBP", True])
        if link:
            data.append(["IFLA_VXLAN_LINK", link])
        info = [["IFLA_INFO_KIND", "vxlan"], ["IFLA_INFO_DATA", {"attrs": data}]]
        attrs: List[list] = [["IFLA_LINKINFO", {"attrs": info}]]
        if mtu:
            attrs.append(["IFLA_MTU", mtu])
        if mac:
            attrs.append(["IFLA_ADDRESS", mac.lower()])
        return self._newlink(name, f"vxlan (VNI {vni})", attrs)

    def set_port(self, ref: LinkRef, hairpin: Optional[bool] = None,
                 learning: Optional[bool] = None, isolated: Optional[bool] = None) -> None:
        """Set bridge-port flags of ``ref`` (a port of a bridge)."""
        wanted = {"hairpin": hairpin, "learning": learning, "isolated": isolated}
        data = [[_PORT_FLAGS[k], int(v)] for k, v in wanted.items() if v is not None]
        if not data:
            return
        info = [["IFLA_INFO_SLAVE_KIND", "bridge"], ["IFLA_INFO_SLAVE_DATA", {"attrs": data}]]
        self._setlink(ref, "setting bridge port flags", attrs=[["IFLA_LINKINFO", {"attrs": info}]])


