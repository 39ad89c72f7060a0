"""NodeFacts: everything the checks look at, gathered once by the I/O layer (collect*.py).

Plain data only, so every check is a pure function of it and is unit-tested without root.
A source that could not be read is None with the reason in ``unavailable[<source>]``;
checks then answer "!" instead of guessing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from cni_flannel.daemon.lease import Lease
from cni_flannel.daemon.netconf import NetConf
from cni_flannel.flannel.subnet_env import SubnetEnv
from cni_flannel.net.types import Address, Link, Neighbour, Route


@dataclass(frozen=True)
class PodNet:
    """A network namespace with a veth on this node's bridge (a pod, as far as the node can tell)."""
    netns: str                       # a path (/run/netns/..., /proc/<pid>/ns/net)
    nsid: int                        # its id as the node sees it (the host veths' peer_netnsid)
    addresses: Tuple[str, ...] = ()  # bare IPs on its interfaces (not lo)
    mtus: Tuple[Tuple[str, int], ...] = ()  # (ifname, mtu) of its veths


@dataclass(frozen=True)
class Held:
    """An address host-local holds: /var/lib/cni/networks/<network>/<ip>."""
    network: str
    ip: str
    container_id: str
    ifname: str


@dataclass(frozen=True)
class IptablesSave:
    """``iptables-<mode>-save`` output of one family, split per table ({table: text})."""
    mode: str                        # legacy / nft
    family: str                      # ipv4 / ipv6
    tables: Dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Daemon:
    url: str                         # http://ip:port
    explicit: bool                   # the user named the port (so silence means "not running")
    ready: Optional[bool] = None     # None: nothing answered
    status: int = 0
    body: str = ""
    error: str = ""
    metrics: Dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class LeaseSource:
    """Leases read from the store flanneld uses (etcd or the Kubernetes API)."""
    kind: str                        # "etcd" / "kube"
    where: str                       # endpoint, for the evidence
    leases: Tuple[Lease, ...] = ()   # every lease (kube: every node's podCIDRs)
    own: Optional[Lease] = None      # this node's, when it can be told (kube: our node; etcd: PublicIP)
    ttl: Optional[float] = None      # seconds left on our lease (etcd)


@dataclass(frozen=True)
class Probe:
    """One echo request to a peer's VTEP address over the overlay."""
    peer: str                        # the peer subnet
    target: str                      # the address pinged
    rtt_ms: Optional[float] = None   # None: no answer within the timeout
    error: str = ""


@dataclass
class NodeFacts:
    node: str = ""
    # files
    subnet_env_path: str = "/run/flannel/subnet.env"
    subnet_env: Optional[SubnetEnv] = None
    subnet_env_error: str = ""       # why it could not be loaded
    subnet_env_missing: bool = False
    netconf_path: str = ""
    netconf: Optional[NetConf] = None
    netconf_error: str = ""
    cni_conf: Dict[str, object] = field(default_factory=dict)  # the flannel conflist (raw), if found
    cni_conf_path: str = ""
    # netlink (the node's namespace)
    links: List[Link] = field(default_factory=list)
    addresses: List[Address] = field(default_factory=list)
    routes: List[Route] = field(default_factory=list)
    neighbours: List[Neighbour] = field(default_factory=list)
    fdb: List[Neighbour] = field(default_factory=list)
    pods: List[PodNet] = field(default_factory=list)
    # kernel
    sysctls: Dict[str, Optional[str]] = field(default_factory=dict)  # key -> value, None when absent
    kernel_release: str = ""
    kernel_features: Dict[str, bool] = field(default_factory=dict)   # vxlan / tun -> available
    tx_checksum: Dict[str, Optional[bool]] = field(default_factory=dict)  # vtep name -> tx csum offload on
    # firewall
    iptables_mode: str = ""          # what the node uses (detected as kube-proxy does)
    iptables: List[IptablesSave] = field(default_factory=list)
    nft_text: Optional[str] = None   # `nft -a list ruleset`
    # state files of the plugins
    held: List[Held] = field(default_factory=list)
    saved_configs: List[str] = field(default_factory=list)
    flannel_data_dir: str = "/var/lib/cni/flannel"
    ipam_data_dir: str = "/var/lib/cni/networks"
    # remote
    daemon: Optional[Daemon] = None
    lease_source: Optional[LeaseSource] = None
    probes: List[Probe] = field(default_factory=list)
    unavailable: Dict[str, str] = field(default_factory=dict)

    # --- conveniences for checks --------------------------------------------------------
    def link(self, name: str) -> Optional[Link]:
        return next((l for l in self.links if l.name == name), None)

    def link_by_index(self, index: int) -> Optional[Link]:
        return next((l for l in self.links if l.index == index), None)

    def addresses_of(self, index: int) -> List[Address]:
        return [a for a in self.addresses if a.index == index]
