"""portmap's configuration: stdin -> a validated PortmapConfig (pure).

Options and errors follow plugins/meta/portmap/main.go (parseConfig,
validateBackend); we also refuse what the reference passes to iptables
unchecked: a port outside 1-65535, an unknown protocol, a hostIP that is no
IP address, and conditions we cannot validate (see ``conditions``).  All of
it is InvalidConfig (code 7), raised before any command runs.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from cni_flannel.cni.config import NetConf
from cni_flannel.cni.errors import InvalidConfig
from cni_flannel.cni.result import Result

from . import conditions as cond

IPTABLES, NFTABLES = cond.IPTABLES, cond.NFTABLES
BACKENDS = (IPTABLES, NFTABLES)
PROTOCOLS = ("tcp", "udp", "sctp")
DEFAULT_MARK_BIT = 13  # Kubernetes uses 14 and 15, Calico 20-31
FAMILIES = ("ipv4", "ipv6")
OPTIONS = ("snat", "masqAll", "markMasqBit", "externalSetMarkChain", "conditionsV4", "conditionsV6", "backend")

Interface = Union[ipaddress.IPv4Interface, ipaddress.IPv6Interface]
#: backend name -> usable on this node (injected so parsing stays pure)
Probe = Callable[[str], bool]


@dataclass(frozen=True)
class PortMapping:
    host_port: int
    container_port: int
    protocol: str
    host_ip: Optional[str] = None  # normalized; None when not given

    @property
    def host_family(self) -> Optional[str]:
        if self.host_ip is None:
            return None
        return "ipv6" if ipaddress.ip_address(self.host_ip).version == 6 else "ipv4"

    def applies_to(self, family: str) -> bool:
        """A hostIP of the other family leaves the mapping out (as upstream)."""
        return self.host_ip is None or self.host_family == family

    @property
    def dst(self) -> Optional[str]:
        """The destination to match: the hostIP unless it is 0.0.0.0 / ::."""
        if self.host_ip is None or ipaddress.ip_address(self.host_ip).is_unspecified:
            return None
        return self.host_ip


@dataclass(frozen=True)
class PortmapConfig:
    network: str
    backend: str
    mappings: Tuple[PortMapping, ...] = ()
    snat: bool = True
    masq_all: bool = False
    mark_bit: int = DEFAULT_MARK_BIT
    external_set_mark_chain: Optional[str] = None
    conditions: Dict[str, cond.Conditions] = field(default_factory=dict)  # family -> matches
    container_nets: Dict[str, Interface] = field(default_factory=dict)  # family -> pod address

    @property
    def mark(self) -> int:
        return 1 << self.mark_bit

    def udp_host_ports(self) -> List[int]:
        return sorted({m.host_port for m in self.mappings if m.protocol == "udp"})


def lookup(d: Dict[str, Any], key: str) -> Any:
    """d[key] the way Go's encoding/json finds a struct field: the exact key, else
    any key equal ignoring case.  containerd's go-cni sends port mappings as
    {"HostPort": ..., "ContainerPort": ...}, which the reference reads this way."""
    if key in d:
        return d[key]
    folded = key.lower()
    return next((v for k, v in d.items() if isinstance(k, str) and k.lower() == folded), None)


def parse(netconf: NetConf, ifname: str, usable: Probe) -> PortmapConfig:
    """Validate everything portmap reads from stdin."""
    raw = {k: lookup(netconf.raw, k) for k in OPTIONS}
    snat = _optional_bool(raw, "snat", True)
    masq_all = _optional_bool(raw, "masqAll", False)
    mark_bit, external = raw.get("markMasqBit"), raw.get("externalSetMarkChain")
    if mark_bit is not None and external is not None:
        raise InvalidConfig("Cannot specify externalSetMarkChain and markMasqBit")
    if mark_bit is None:
        mark_bit = DEFAULT_MARK_BIT
    if isinstance(mark_bit, bool) or not isinstance(mark_bit, int) or not 0 <= mark_bit <= 31:
        raise InvalidConfig(f"MasqMarkBit must be between 0 and 31, got {mark_bit!r}")
    if external is not None:
        external = _chain(external)
    backend = _backend(raw, usable)
    return PortmapConfig(
        network=netconf.name,
        backend=backend,
        mappings=parse_mappings(lookup(netconf.runtime_config, "portMappings")),
        snat=snat,
        masq_all=masq_all,
        mark_bit=mark_bit,
        external_set_mark_chain=external,
        conditions={"ipv4": cond.parse("conditionsV4", raw.get("conditionsV4"), 4),
                    "ipv6": cond.parse("conditionsV6", raw.get("conditionsV6"), 6)},
        container_nets=container_nets(netconf.prev_result, ifname),
    )


def _optional_bool(raw: Dict[str, Any], key: str, default: bool) -> bool:
    value = raw.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise InvalidConfig(f"{key} must be true or false, got {value!r}")
    return value


def _chain(name: object) -> str:
    from cni_flannel.firewall import Rule

    if not isinstance(name, str):
        raise InvalidConfig(f"externalSetMarkChain must be a chain name, got {name!r}")
    Rule(target=name)  # the firewall layer's chain-name rules (letters, digits, _ . -; <= 28)
    return name


def _backend(raw: Dict[str, Any], usable: Probe) -> str:
    """validateBackend: explicit or default backend, and no options of the other one."""
    wanted: Dict[str, List[str]] = {IPTABLES: [], NFTABLES: []}
    if raw.get("externalSetMarkChain") is not None:
        wanted[IPTABLES].append("externalSetMarkChain")
    for key in ("conditionsV4", "conditionsV6"):
        value = raw.get(key)
        syntax = cond.syntax_of(value) if isinstance(value, list) else ""
        if syntax:
            wanted[syntax].append(key)
    backend = raw.get("backend")
    if backend is None:
        backend = NFTABLES if not usable(IPTABLES) and usable(NFTABLES) else IPTABLES
    if backend not in BACKENDS:
        raise InvalidConfig(f"unrecognized backend {backend!r}", f"use one of {', '.join(BACKENDS)}")
    other = NFTABLES if backend == IPTABLES else IPTABLES
    if wanted[other]:
        raise InvalidConfig(f"{backend} backend was requested but configuration contains "
                            f"{other}-specific options [{' '.join(wanted[other])}]")
    return backend


def parse_mappings(value: object) -> Tuple[PortMapping, ...]:
    """runtimeConfig.portMappings: [{hostPort, containerPort, protocol, hostIP}]."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise InvalidConfig(f"runtimeConfig.portMappings must be a list, got {value!r}")
    return tuple(_mapping(entry) for entry in value)


def _port(entry: Dict[str, Any], key: str, what: str) -> int:
    port = lookup(entry, key)
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise InvalidConfig(f"Invalid {what} port number: {port!r}", f"{key} must be an integer 1-65535 in {entry!r}")
    return port


def _mapping(entry: object) -> PortMapping:
    if not isinstance(entry, dict):
        raise InvalidConfig(f"invalid port mapping {entry!r}", "expected {hostPort, containerPort, protocol, hostIP}")
    container_port = _port(entry, "containerPort", "container")
    host_port = _port(entry, "hostPort", "host")
    protocol = lookup(entry, "protocol")
    if not isinstance(protocol, str) or protocol.lower() not in PROTOCOLS:
        raise InvalidConfig(f"invalid protocol {protocol!r} in port mapping {entry!r}",
                            f"use one of {', '.join(PROTOCOLS)}")
    return PortMapping(host_port, container_port, protocol.lower(), _host_ip(entry))


def _host_ip(entry: Dict[str, Any]) -> Optional[str]:
    value = lookup(entry, "hostIP")
    if value is None or value == "":
        return None
    bad = InvalidConfig(f"invalid hostIP {value!r} in port mapping {entry!r}",
                        "hostIP must be a single IPv4 or IPv6 address (or empty for all addresses)")
    if not isinstance(value, str) or "%" in value:
        raise bad
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        raise bad from None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        raise InvalidConfig(f"invalid hostIP {value!r}: an IPv4-mapped IPv6 address",
                            f"write it as {addr.ipv4_mapped}")
    return str(addr)


def container_nets(prev: Optional[Result], ifname: str) -> Dict[str, Interface]:
    """The first IPv4 and IPv6 address of the sandbox interface (upstream's rule:
    skip addresses on a known interface that is not ifname or has no sandbox)."""
    found: Dict[str, Interface] = {}
    if prev is None:
        return found
    for ip in prev.ips:
        iface = ipaddress.ip_interface(ip.address)
        family = "ipv6" if iface.version == 6 else "ipv4"
        if family in found:
            continue
        idx = ip.interface
        if idx is not None and 0 <= idx < len(prev.interfaces):
            known = prev.interfaces[idx]
            if known.name != ifname or not known.sandbox:
                continue
        found[family] = iface
    return found
