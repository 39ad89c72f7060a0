"""Bridge VLANs and neighbour/FDB entries of :class:`cni_flannel.net.handle.Handle` (mixin)."""

from __future__ import annotations

import socket
from typing import Any, Dict, List, Optional

from cni_flannel.net import _nl
from cni_flannel.net.errors import translate
from cni_flannel.net.types import Neighbour, Vlan

AF_BRIDGE = 7
BRIDGE_FLAGS_SELF = 2
BRIDGE_VLAN_INFO_PVID = 0x2
BRIDGE_VLAN_INFO_UNTAGGED = 0x4
RTEXT_FILTER_BRVLAN = 0x2
NUD_PERMANENT = 0x80
NTF_SELF = 0x2
NTF_MASTER = 0x4


class BridgeOps:
    netns: Optional[str]
    _nl: "_nl.Socket"

    def _where(self) -> str:  # pragma: no cover - provided by LinkOps
        return ""

    # --- VLANs -------------------------------------------------------------
    def _vlan_msg(self, index: int, vid: int, pvid: bool, untagged: bool, self_: bool) -> Any:
        flags = (BRIDGE_VLAN_INFO_PVID if pvid else 0) | (BRIDGE_VLAN_INFO_UNTAGGED if untagged else 0)
        spec: List[list] = []
        if self_:
            spec.append(["IFLA_BRIDGE_FLAGS", BRIDGE_FLAGS_SELF])
        spec.append(["IFLA_BRIDGE_VLAN_INFO", {"flags": flags, "vid": vid}])
        return _nl.new("link", family=AF_BRIDGE, index=index, attrs=[["IFLA_AF_SPEC", {"attrs": spec}]])

    def add_vlan(self, index: int, vid: int, pvid: bool = False, untagged: bool = False,
                 self_: bool = False) -> None:
        """`bridge vlan add dev <index> vid <vid> [pvid] [untagged] [self]`."""
        with translate(f"adding VLAN {vid} to link {index}{self._where()}"):
            self._nl.request(self._vlan_msg(index, vid, pvid, untagged, self_), _nl.RTM_SETLINK)

    def delete_vlan(self, index: int, vid: int, self_: bool = False) -> None:
        with translate(f"deleting VLAN {vid} from link {index}{self._where()}"):
            self._nl.request(self._vlan_msg(index, vid, False, False, self_), _nl.RTM_DELLINK)

    def vlans(self) -> Dict[int, List[Vlan]]:
        """VLANs per ifindex (bridge ports and the bridge itself), as `bridge vlan show`."""
        msg = _nl.new("link", family=AF_BRIDGE, attrs=[["IFLA_EXT_MASK", RTEXT_FILTER_BRVLAN]])
        with translate(f"listing bridge VLANs{self._where()}"):
            replies = self._nl.request(msg, _nl.RTM_GETLINK, dump=True)
        out: Dict[int, List[Vlan]] = {}
        for reply in replies:
            spec = _nl.attr(reply, "IFLA_AF_SPEC")
            if spec is None:
                continue
            for info in spec.get_attrs("IFLA_BRIDGE_VLAN_INFO"):
                flags = info["flags"]
                out.setdefault(reply["index"], []).append(
                    Vlan(vid=info["vid"], pvid=bool(flags & BRIDGE_VLAN_INFO_PVID),
                         untagged=bool(flags & BRIDGE_VLAN_INFO_UNTAGGED)))
        return out

    # --- neighbours and FDB ------------------------------------------------
    def _neigh_msg(self, index: int, ip: Optional[str], mac: Optional[str], bridge: bool) -> Any:
        attrs: List[list] = []
        if ip:
            attrs.append(["NDA_DST", ip])
        if mac:
            attrs.append(["NDA_LLADDR", mac.lower()])
        if bridge:
            family, flags = AF_BRIDGE, NTF_SELF
        else:
            family, flags = (socket.AF_INET6 if ip and ":" in ip else socket.AF_INET), 0
        return _nl.new("neigh", family=family, ifindex=index, state=NUD_PERMANENT, flags=flags,
                       ndm_type=0, attrs=attrs)

    def set_neighbour(self, index: int, ip: str, mac: str) -> None:
        """Create or replace a permanent neighbour entry (`ip neigh replace … nud permanent`)."""
        with translate(f"setting neighbour {ip} lladdr {mac} on link {index}{self._where()}"):
            self._nl.request(self._neigh_msg(index, ip, mac, False), _nl.RTM_NEWNEIGH,
                             _nl.NLM_F_CREATE | _nl.NLM_F_REPLACE)

    def delete_neighbour(self, index: int, ip: str) -> None:
        with translate(f"deleting neighbour {ip} on link {index}{self._where()}"):
            self._nl.request(self._neigh_msg(index, ip, None, False), _nl.RTM_DELNEIGH)

    def set_fdb(self, index: int, mac: str, dst: Optional[str] = None) -> None:
        """`bridge fdb replace <mac> dev <index> [dst <ip>] self permanent` (e.g. on a VXLAN)."""
        with translate(f"setting FDB entry {mac} dst {dst} on link {index}{self._where()}"):
            self._nl.request(self._neigh_msg(index, dst, mac, True), _nl.RTM_NEWNEIGH,
                             _nl.NLM_F_CREATE | _nl.NLM_F_REPLACE)

    def delete_fdb(self, index: int, mac: str, dst: Optional[str] = None) -> None:
        with translate(f"deleting FDB entry {mac} on link {index}{self._where()}"):
            self._nl.request(self._neigh_msg(index, dst, mac, True), _nl.RTM_DELNEIGH)

    def neighbours(self, index: Optional[int] = None, bridge: bool = False) -> List[Neighbour]:
        """Neighbour entries (``bridge``: FDB entries) optionally of one link."""
        msg = _nl.new("neigh", family=AF_BRIDGE if bridge else 0)
        with translate(f"listing {'FDB' if bridge else 'neighbour'} entries{self._where()}"):
            replies = self._nl.request(msg, _nl.RTM_GETNEIGH, dump=True)
        out = []
        for r in replies:
            if index is not None and r["ifindex"] != index:
                continue
            out.append(Neighbour(index=r["ifindex"], ip=_nl.attr(r, "NDA_DST"),
                                 mac=_nl.attr(r, "NDA_LLADDR") or "", state=r["state"],
                                 bridge=r["family"] == AF_BRIDGE))
        return out
