"""The thin I/O layer: read everything the checks need into one NodeFacts.

Read-only: files, netlink dumps, /proc, iptables-save / nft list, HTTP GETs.  Whatever
cannot be read is recorded in ``facts.unavailable`` and the matching checks answer "!".
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import socket
import struct
from dataclasses import dataclass
from typing import List, Optional, Tuple

from cni_flannel.cni.errors import CNIError
from cni_flannel.daemon import netconf as netconf_mod
from cni_flannel.flannel import saved_conf, subnet_env
from cni_flannel.ipam.store import ip_of, parse_owner

from .common import BRIDGE
from .facts import Held, NodeFacts

SYSCTLS = ("net/bridge/bridge-nf-call-iptables", "net/bridge/bridge-nf-call-ip6tables",
           "net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding")
SIOCETHTOOL, ETHTOOL_GTXCSUM = 0x8946, 0x16


class CannotInspect(Exception):
    """The node cannot be inspected at all (exit 2)."""


@dataclass
class Options:
    subnet_file: str = subnet_env.DEFAULT_PATH
    net_config_path: str = netconf_mod.DEFAULT_PATH
    cni_conf_dir: str = "/etc/cni/net.d"
    ipam_dir: str = "/var/lib/cni/networks"
    flannel_dir: str = saved_conf.DEFAULT_DIR
    bin_dir: str = "/opt/cni/bin"
    proc_root: str = "/proc"
    healthz_ip: str = "127.0.0.1"
    healthz_port: Optional[int] = None
    etcd_endpoints: Tuple[str, ...] = ()
    etcd_prefix: str = "/coreos.com/network"
    kube_api_url: str = ""
    kube_token_file: str = ""
    kube_ca_file: str = ""
    node_name: str = ""
    probe: bool = True
    probe_timeout: float = 1.0
    http_timeout: float = 1.0


def read_files(f: NodeFacts, o: Options) -> None:
    f.subnet_env_path = o.subnet_file
    try:
        f.subnet_env = subnet_env.load(o.subnet_file)
    except CNIError as exc:
        f.subnet_env_missing = not os.path.exists(o.subnet_file)
        f.subnet_env_error = exc.msg
    f.netconf_path = o.net_config_path
    if os.path.exists(o.net_config_path):
        try:
            f.netconf = netconf_mod.load(o.net_config_path, kube=bool(o.kube_api_url))
        except (CNIError, ValueError) as exc:
            f.netconf_error = f"{o.net_config_path}: {exc}"
    else:
        f.netconf_error = f"no {o.net_config_path}"
    f.cni_conf, f.cni_conf_path = _flannel_conflist(o.cni_conf_dir)


def _flannel_conflist(conf_dir: str) -> Tuple[dict, str]:
    """The first conflist (in the runtime's order) whose first plugin is flannel."""
    try:
        names = sorted(n for n in os.listdir(conf_dir) if n.endswith((".conflist", ".conf", ".json")))
    except OSError:
        return {}, ""
    for name in names:
        path = os.path.join(conf_dir, name)
        try:
            with open(path) as fh:
                doc = json.load(fh)
        except (OSError, ValueError):
            continue
        plugins = doc.get("plugins") if isinstance(doc, dict) else None
        if isinstance(plugins, list) and plugins and isinstance(plugins[0], dict) and plugins[0].get("type") == "flannel":
            return doc, path
        if isinstance(doc, dict) and doc.get("type") == "flannel":  # a single .conf
            return {"name": doc.get("name", "cbr0"), "cniVersion": doc.get("cniVersion"), "plugins": [doc]}, path
    return {}, ""


def read_netlink(f: NodeFacts) -> None:
    from cni_flannel.net.dump import Dumper

    from .collect_pods import find_pods

    try:
        with Dumper() as d:
            f.links = d.links()
            f.addresses = d.addresses()
            f.routes = d.routes()
            f.neighbours = d.neighbours()
            f.fdb = d.neighbours(bridge=True)
    except OSError as exc:
        raise CannotInspect(f"cannot read this node's network state over netlink: {exc}") from None
    br = f.link(BRIDGE)
    nsids = {l.peer_netnsid for l in f.links
             if br is not None and l.master == br.index and l.peer_netnsid is not None and l.peer_netnsid >= 0}
    f.pods = find_pods(nsids)
    unseen = len(nsids) - sum(1 for p in f.pods if p.addresses)
    if unseen:  # never call an address leaked when its pod may be one we cannot see
        f.unavailable["ipam"] = (f"{unseen} of {len(nsids)} pod network namespaces on cni0 could not be found or read "
                                 "(run doctor on the host itself, with /run/netns and the host's /proc)")


def read_kernel(f: NodeFacts, o: Options) -> None:
    for key in SYSCTLS:
        f.sysctls[key] = _read(os.path.join(o.proc_root, "sys", key))
    f.kernel_release = _read(os.path.join(o.proc_root, "sys/kernel/osrelease")) or os.uname().release
    f.kernel_features = {"vxlan": _module("vxlan", f.kernel_release), "tun": os.path.exists("/dev/net/tun")
                         or _module("tun", f.kernel_release)}
    for l in f.links:
        if l.kind == "vxlan":
            f.tx_checksum[l.name] = tx_checksum(l.name)


def _read(path: str) -> Optional[str]:
    try:
        with open(path) as fh:
            return fh.read().strip()
    except OSError:
        return None


def _module(name: str, release: str) -> bool:
    if os.path.isdir(f"/sys/module/{name}"):
        return True
    for index in ("modules.builtin", "modules.dep"):
        text = _read(f"/lib/modules/{release}/{index}") or ""
        if f"/{name}.ko" in text:
            return True
    return False


def tx_checksum(ifname: str) -> Optional[bool]:
    """ethtool's "tx-checksumming" of a device (ETHTOOL_GTXCSUM); None when it cannot be read."""
    value = ctypes.create_string_buffer(struct.pack("=II", ETHTOOL_GTXCSUM, 0), 8)
    ifreq = struct.pack("16sP", ifname.encode()[:15], ctypes.addressof(value)).ljust(40, b"\0")
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            fcntl.ioctl(s.fileno(), SIOCETHTOOL, ifreq)
    except OSError:
        return None
    return bool(struct.unpack("=II", value.raw)[1])


def read_plugin_state(f: NodeFacts, o: Options) -> None:
    f.ipam_data_dir, f.flannel_data_dir = o.ipam_dir, o.flannel_dir
    plugin = (f.cni_conf.get("plugins") or [{}])[0] if f.cni_conf else {}
    ipam_type = (plugin.get("ipam") or {}).get("type", "host-local") if isinstance(plugin, dict) else "host-local"
    if ipam_type != "host-local":
        f.unavailable["ipam"] = f"the flannel network uses IPAM {ipam_type!r}, not host-local"
        return
    network = f.cni_conf.get("name", "cbr0") if f.cni_conf else "cbr0"
    d = os.path.join(o.ipam_dir, network)
    try:
        names = os.listdir(d)
    except FileNotFoundError:
        names = []
    except OSError as exc:
        f.unavailable["ipam"] = f"cannot list {d}: {exc.strerror}"
        return
    held: List[Held] = []
    for name in sorted(names):
        ip = ip_of(name)
        if ip is None:
            continue
        try:
            with open(os.path.join(d, name), "rb") as fh:
                owner = parse_owner(fh.read())
        except OSError:
            continue
        cid, ifname = (owner[0], owner[1] or "eth0") if owner else ("", "")
        held.append(Held(network, str(ip), cid, ifname))
    f.held = held
    f.saved_configs = saved_conf.container_ids(o.flannel_dir)
