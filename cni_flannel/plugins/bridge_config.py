"""bridge's configuration: NetConf + CNI_ARGS -> a validated BridgeConfig (pure).

Options follow plugins/main/bridge/bridge.go (loadNetConf, collectVlanTrunk,
cmdAdd's early checks).  Every problem is InvalidConfig (code 7), raised
before ADD changes anything; we also refuse what the reference lets through
silently (a wrongly typed option, an MTU no link accepts, overlapping trunk
ranges, an ipam section without a type, a malformed MAC).  Not implemented
yet, refused with UnsupportedField (2): isGateway together with vlan (the
reference's <bridge>.<vlan> gateway veth).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from cni_flannel.cni.config import NetConf
from cni_flannel.cni.errors import InvalidConfig, UnsupportedField
from cni_flannel.cni.names import printable_name_problem

DEFAULT_BRIDGE = "cni0"
MIN_MTU, MAX_MTU = 68, 65535
MAX_VLAN = 4094
MASQ_BACKENDS = ("iptables", "nftables")
_MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
_BOOLS = ("isGateway", "isDefaultGateway", "forceAddress", "ipMasq", "hairpinMode", "promiscMode",
          "preserveDefaultVlan", "macspoofchk", "enabledad", "disableContainerInterface",
          "portIsolation")


@dataclass(frozen=True)
class BridgeConfig:
    network: str
    bridge: str = DEFAULT_BRIDGE
    is_gateway: bool = False
    is_default_gateway: bool = False
    force_address: bool = False
    ip_masq: bool = False
    ip_masq_backend: Optional[str] = None
    mtu: int = 0
    hairpin: bool = False
    promisc: bool = False
    vlan: int = 0
    vlans: Tuple[int, ...] = ()           # the trunk, expanded and sorted
    preserve_default_vlan: bool = True
    macspoofchk: bool = False
    enable_dad: bool = False
    disable_container_interface: bool = False
    port_isolation: bool = False
    mac: str = ""                          # container MAC, "" to let the kernel choose
    ipam: Dict[str, Any] = field(default_factory=dict)
    dns: Dict[str, Any] = field(default_factory=dict)

    @property
    def ipam_type(self) -> str:
        return self.ipam.get("type", "") if self.ipam else ""

    @property
    def layer3(self) -> bool:
        return bool(self.ipam_type)

    @property
    def vlan_filtering(self) -> bool:
        return bool(self.vlan or self.vlans)


def _bad(msg: str, hint: str) -> InvalidConfig:
    return InvalidConfig(msg, hint)


def _bool(raw: Dict[str, Any], key: str, default: bool = False) -> bool:
    value = raw.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise _bad(f"bridge option {key!r} must be true or false, not {value!r}",
                   f'write "{key}": true or "{key}": false')
    return value


def _int(raw: Dict[str, Any], key: str) -> int:
    value = raw.get(key, 0)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(f"bridge option {key!r} must be an integer, not {value!r}",
                   f"give {key} as a JSON number")
    return value


def _mac(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _MAC.fullmatch(value):  # not match: "$" passes a trailing "\n"
        raise _bad(f"invalid MAC address {value!r} in {where}",
                   "use six colon-separated hex bytes, e.g. 0a:58:0a:f4:01:02")
    if int(value[:2], 16) & 1:
        raise _bad(f"MAC address {value!r} in {where} is a multicast address",
                   "the first byte must be even (e.g. 0a:58:...)")
    return value.lower()


def collect_vlan_trunk(trunk: Any) -> Tuple[int, ...]:
    """Expand vlanTrunk [{minID, maxID} | {id}] into sorted VLAN IDs; refuse overlaps."""
    if trunk is None:
        return ()
    if not isinstance(trunk, list):
        raise _bad(f"vlanTrunk must be a list, not {trunk!r}",
                   'e.g. "vlanTrunk": [{"id": 42}, {"minID": 100, "maxID": 110}]')
    seen: Dict[int, str] = {}

    def take(vid: Any, what: str, entry: str) -> int:
        if isinstance(vid, bool) or not isinstance(vid, int) or not 1 <= vid <= MAX_VLAN:
            raise _bad(f"incorrect trunk {what} parameter {vid!r} in {entry}",
                       f"VLAN IDs are integers from 1 to {MAX_VLAN}")
        return vid

    for item in trunk:
        if not isinstance(item, dict):
            raise _bad(f"vlanTrunk entry {item!r} is not an object", 'use {"id": N} or {"minID": A, "maxID": B}')
        entry = str(item)
        lo, hi, one = item.get("minID"), item.get("maxID"), item.get("id")
        ids: List[int] = []
        if lo is not None or hi is not None:
            if lo is None:
                raise _bad(f"minID and maxID should be configured simultaneously, minID is missing in {entry}",
                           "add minID")
            if hi is None:
                raise _bad(f"minID and maxID should be configured simultaneously, maxID is missing in {entry}",
                           "add maxID")
            lo, hi = take(lo, "minID", entry), take(hi, "maxID", entry)
            if hi < lo:
                raise _bad(f"minID is greater than maxID in trunk parameter {entry}", "swap them")
            ids.extend(range(lo, hi + 1))
        if one is not None:
            ids.append(take(one, "id", entry))
        if not ids:
            raise _bad(f"vlanTrunk entry {entry} names no VLAN", 'use {"id": N} or {"minID": A, "maxID": B}')
        for vid in ids:
            if vid in seen and seen[vid] != entry:
                raise _bad(f"vlanTrunk entries overlap: VLAN {vid} is in {seen[vid]} and {entry}",
                           "list every VLAN once")
            seen[vid] = entry
    return tuple(sorted(seen))


def parse(conf: NetConf, cni_args: Optional[Dict[str, str]] = None) -> BridgeConfig:
    raw = conf.raw
    bridge = raw.get("bridge", DEFAULT_BRIDGE)
    if bridge in (None, ""):
        bridge = DEFAULT_BRIDGE
    if not isinstance(bridge, str):
        raise _bad(f"bridge name must be a string, not {bridge!r}", 'e.g. "bridge": "cni0"')
    problem = printable_name_problem(bridge)
    if problem:
        raise _bad(f"invalid bridge name {bridge!r}: {problem}",
                   "use at most 15 bytes of printable characters, no '/', ':' or spaces")

    flags = {key: _bool(raw, key, default=(key == "preserveDefaultVlan")) for key in _BOOLS}
    mtu = _int(raw, "mtu")
    if mtu and not MIN_MTU <= mtu <= MAX_MTU:
        raise _bad(f"invalid MTU {mtu}", f"use a value from {MIN_MTU} to {MAX_MTU}, or leave mtu out")
    vlan = _int(raw, "vlan")
    if not 0 <= vlan <= MAX_VLAN:
        raise _bad(f"invalid VLAN ID {vlan} (must be between 0 and {MAX_VLAN})", "0 means untagged")
    vlans = collect_vlan_trunk(raw.get("vlanTrunk"))
    if vlan and vlans:
        raise _bad("cannot set vlan and vlanTrunk at the same time",
                   "a port is either an access port (vlan) or a trunk (vlanTrunk)")
    if flags["hairpinMode"] and flags["promiscMode"]:
        raise _bad("cannot set hairpin mode and promiscuous mode at the same time",
                   "drop hairpinMode or promiscMode")
    backend = raw.get("ipMasqBackend")
    if backend is not None and backend not in MASQ_BACKENDS:
        raise _bad(f"invalid ipMasqBackend {backend!r}", f"use one of {', '.join(MASQ_BACKENDS)}")

    ipam = raw.get("ipam") or {}
    if not isinstance(ipam, dict):
        raise _bad(f"ipam must be an object, not {ipam!r}", 'e.g. "ipam": {"type": "host-local", ...}')
    if ipam and not (isinstance(ipam.get("type"), str) and ipam.get("type")):
        raise _bad("ipam section has no type", 'add "type" (e.g. "host-local"), or drop ipam for a layer-2 port')
    if flags["disableContainerInterface"] and ipam:
        raise _bad("disableContainerInterface cannot be used with IPAM",
                   "a container interface that stays down cannot carry addresses; drop one of them")
    if vlan and (flags["isGateway"] or flags["isDefaultGateway"]) and ipam:
        raise UnsupportedField("isGateway with vlan is not supported by this bridge plugin yet",
                               "the reference puts the gateway on a <bridge>.<vlan> veth; drop one of them")
    dns = raw.get("dns") or {}
    if not isinstance(dns, dict):
        raise _bad(f"dns must be an object, not {dns!r}", 'e.g. "dns": {"nameservers": ["10.96.0.10"]}')

    mac = ""
    env_mac = (cni_args or {}).get("MAC", "")
    if env_mac:
        mac = _mac(env_mac, "CNI_ARGS MAC")
    cni = conf.args.get("cni") if isinstance(conf.args, dict) else None
    if isinstance(cni, dict) and cni.get("mac"):
        mac = _mac(cni["mac"], "args.cni.mac")
    if conf.runtime_config.get("mac"):
        mac = _mac(conf.runtime_config["mac"], "runtimeConfig.mac")

    return BridgeConfig(
        network=conf.name, bridge=bridge,
        is_gateway=flags["isGateway"] or flags["isDefaultGateway"],
        is_default_gateway=flags["isDefaultGateway"], force_address=flags["forceAddress"],
        ip_masq=flags["ipMasq"], ip_masq_backend=backend, mtu=mtu, hairpin=flags["hairpinMode"],
        promisc=flags["promiscMode"], vlan=vlan, vlans=vlans,
        preserve_default_vlan=flags["preserveDefaultVlan"], macspoofchk=flags["macspoofchk"],
        enable_dad=flags["enabledad"], disable_container_interface=flags["disableContainerInterface"],
        port_isolation=flags["portIsolation"], mac=mac, ipam=ipam, dns=dns)
