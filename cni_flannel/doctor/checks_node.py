"""The node's own devices and kernel: cni0's address, the MTU chain, sysctls, kernel support,
VXLAN checksum offload (pure checks over NodeFacts)."""

from __future__ import annotations

import ipaddress
import re
from typing import List, Optional, Tuple

from cni_flannel.daemon import mtu as mtu_rules

from . import model as M
from .common import BRIDGE, backend_type, bridge_ports, plural, subnets, underlay, vtep
from .facts import NodeFacts

CSUM_FIXED_IN = (5, 7)  # kernel 5.7: VXLAN + NAT checksum fix (flannel#1279, kubernetes#92035)


def cni0_address(f: NodeFacts) -> M.Check:
    cid, title = "cni0", "cni0 address"
    if f.subnet_env is None:
        return M.unknown(cid, title, "no readable subnet.env to compare cni0 with")
    br = f.link(BRIDGE)
    if br is None:
        return M.ok(cid, title, "cni0 does not exist yet (the first pod creates it)")
    want = {s.version: ipaddress.ip_interface(f"{s.network_address + 1}/{s.prefixlen}") for s in subnets(f)}
    have = [a.interface for a in f.addresses_of(br.index)
            if not (a.family == 6 and a.interface.ip.is_link_local)]
    wrong = [i for i in have if i.version in want and i != want[i.version]]
    if wrong:
        gw = want[wrong[0].version]
        return M.fail(cid, title,
                      f"cni0 has {', '.join(map(str, wrong))} but FLANNEL_SUBNET needs {gw}: new pods fail with "
                      f"'\"cni0\" already has an IP address different from {gw}'",
                      "the node's subnet changed while cni0 kept the old gateway. Drain the node "
                      "(kubectl drain <node> --ignore-daemonsets --delete-emptydir-data), then "
                      "`ip link delete cni0` on it and `kubectl uncordon <node>`: the next pod recreates cni0 "
                      f"with {gw}")
    missing = [str(w) for v, w in want.items() if w not in have]
    if missing and have:
        return M.fail(cid, title, f"cni0 lacks {', '.join(missing)} (has {', '.join(map(str, have))})",
                      "recreate cni0 as above (drain, `ip link delete cni0`, uncordon)")
    shown = ", ".join(map(str, have)) or "no address yet"
    return M.ok(cid, title, f"cni0 has {shown}, matching FLANNEL_SUBNET")


def mtu_chain(f: NodeFacts) -> M.Check:
    cid, title = "mtu", "MTU chain"
    if f.subnet_env is None:
        return M.unknown(cid, title, "no readable subnet.env (FLANNEL_MTU) to compare with")
    want = f.subnet_env.mtu
    btype = backend_type(f)
    ext = underlay(f)
    chain: List[str] = []
    problems: List[str] = []
    fixes: List[str] = []
    if ext is not None:
        chain.append(f"{ext.name} {ext.mtu}")
        if btype in mtu_rules.OVERHEAD:
            under = f.netconf.backend.mtu if f.netconf is not None and f.netconf.backend.mtu else ext.mtu
            families = {s.version for s in subnets(f)} or {4}
            v6_underlay = bool(vtep(f, 6))
            try:
                carried = mtu_rules.flannel_mtu(btype, under, ipv4=4 in families or not v6_underlay,
                                                ipv6=v6_underlay)
            except mtu_rules.MTUError as exc:
                carried = 0
                problems.append(str(exc))
            if carried and want > carried:
                problems.append(f"FLANNEL_MTU {want} is more than {ext.name} ({under}) carries over {btype} "
                                f"({carried}): full-size packets between nodes are dropped")
                fixes.append(f"set Backend.MTU in net-conf.json (or fix {ext.name}'s MTU) and restart flanneld "
                             f"so FLANNEL_MTU becomes {carried}, then recreate the pods")
    dev = vtep(f) or f.link("flannel0")
    if dev is not None:
        chain.append(f"{dev.name} {dev.mtu}")
        if dev.mtu < want:
            problems.append(f"{dev.name} has MTU {dev.mtu}, below FLANNEL_MTU {want}")
            fixes.append("restart flanneld (it sets the VTEP's MTU)")
    br = f.link(BRIDGE)
    ports = bridge_ports(f)
    if br is not None:
        chain.append(f"{BRIDGE} {br.mtu}")
        if ports and br.mtu > want:
            problems.append(f"cni0 has MTU {br.mtu}, above FLANNEL_MTU {want}")
    host = [p for p in ports if p.kind == "veth"]
    odd_host = [f"{p.name} {p.mtu}" for p in host if p.mtu != want]
    odd_pods = [f"{pod.netns.rsplit('/', 1)[-1]} {name} {m}" for pod in f.pods for name, m in pod.mtus if m != want]
    if host:
        mtus = sorted({p.mtu for p in host})
        chain.append(f"{plural(len(host), 'veth')} {'/'.join(map(str, mtus))}")
    if odd_host or odd_pods:
        problems.append(f"{plural(len(odd_host) + len(odd_pods), 'pod interface')} not at FLANNEL_MTU {want}")
        fixes.append("recreate those pods (their interfaces got the MTU of their time: "
                     "kubectl delete pod <pod>); check FLANNEL_MTU first")
    evidence = " → ".join(chain) + f" (FLANNEL_MTU {want})"
    if problems:
        return M.fail(cid, title, f"{'; '.join(problems)}: {evidence}", "; ".join(fixes) or "see above",
                      items=tuple(odd_host + odd_pods))
    return M.ok(cid, title, evidence)


def br_netfilter(f: NodeFacts) -> M.Check:
    cid, title = "br-netfilter", "br_netfilter"
    nft = f.netconf is not None and f.netconf.enable_nftables
    keys = ["net/bridge/bridge-nf-call-iptables"]
    if any(s.version == 6 for s in subnets(f)):
        keys.append("net/bridge/bridge-nf-call-ip6tables")
    values = {k: f.sysctls.get(k) for k in keys}
    if any(v is None for v in values.values()):
        if nft:
            return M.ok(cid, title, "br_netfilter is not loaded; not needed with EnableNFTables")
        return M.fail(cid, title, "/proc/sys/net/bridge/bridge-nf-call-iptables does not exist: br_netfilter "
                      "is not loaded (flanneld ≥ 0.28 refuses to start; Services are not NATed for pods on one bridge)",
                      "modprobe br_netfilter && echo br_netfilter > /etc/modules-load.d/br_netfilter.conf && "
                      "sysctl -w net.bridge.bridge-nf-call-iptables=1")
    off = [k for k, v in values.items() if v != "1"]
    if off:
        return M.fail(cid, title, ", ".join(f"{k.replace('/', '.')}={values[k]}" for k in off),
                      " && ".join(f"sysctl -w {k.replace('/', '.')}=1" for k in off)
                      + " (and persist it in /etc/sysctl.d/)")
    return M.ok(cid, title, ", ".join(f"{k.replace('/', '.')}=1" for k in keys))


def ip_forward(f: NodeFacts) -> M.Check:
    cid, title = "ip-forward", "IP forwarding"
    keys = ["net/ipv4/ip_forward"]
    if any(s.version == 6 for s in subnets(f)):
        keys.append("net/ipv6/conf/all/forwarding")
    values = {k: f.sysctls.get(k) for k in keys}
    if any(v is None for v in values.values()):
        return M.unknown(cid, title, f"cannot read {', '.join(k for k, v in values.items() if v is None)}")
    off = [k for k, v in values.items() if v != "1"]
    if off:
        return M.fail(cid, title, ", ".join(f"{k.replace('/', '.')}={values[k]}: this node routes no pod traffic"
                                            for k in off),
                      " && ".join(f"sysctl -w {k.replace('/', '.')}=1" for k in off) + " (and persist it in /etc/sysctl.d/)")
    return M.ok(cid, title, ", ".join(f"{k.replace('/', '.')}=1" for k in keys))


def kernel_support(f: NodeFacts) -> M.Check:
    cid, title = "kernel", "kernel support"
    btype = backend_type(f)
    if btype is None:
        return M.unknown(cid, title, "backend unknown (no net-conf.json and no flannel device yet)")
    if btype == "host-gw":
        return M.ok(cid, title, "host-gw needs no tunnel support")
    feature, dev = ("vxlan", vtep(f)) if btype == "vxlan" else ("tun", f.link("flannel0"))
    if dev is not None:
        return M.ok(cid, title, f"{dev.name} exists ({btype} works in this kernel {f.kernel_release})")
    have = f.kernel_features.get(feature)
    if have is None:
        return M.unknown(cid, title, f"cannot tell whether kernel {f.kernel_release} has {feature}")
    if not have:
        return M.fail(cid, title, f"kernel {f.kernel_release} has no {feature} module (needed by the {btype} backend)",
                      f"install the kernel's extra modules (e.g. linux-modules-extra-$(uname -r)) and `modprobe {feature}`")
    return M.ok(cid, title, f"{feature} is available in kernel {f.kernel_release} ({btype} device not created yet)")


def _release(text: str) -> Optional[Tuple[int, int]]:
    m = re.match(r"(\d+)\.(\d+)", text)
    return (int(m.group(1)), int(m.group(2))) if m else None


def vxlan_offload(f: NodeFacts) -> M.Check:
    cid, title = "vxlan-offload", "VXLAN checksum offload"
    dev = vtep(f)
    if backend_type(f) != "vxlan" or dev is None:
        return M.ok(cid, title, "no VXLAN device: does not apply")
    release = _release(f.kernel_release)
    if release is None:
        return M.unknown(cid, title, f"cannot parse the kernel release {f.kernel_release!r}")
    if release >= CSUM_FIXED_IN:
        return M.ok(cid, title, f"kernel {f.kernel_release} has the VXLAN/NAT checksum fix (5.7+): offload on {dev.name} is fine")
    on = f.tx_checksum.get(dev.name)
    if on is None:
        return M.unknown(cid, title, f"kernel {f.kernel_release} predates 5.7 and the offload state of {dev.name} is unknown")
    if on:
        return M.fail(cid, title, f"kernel {f.kernel_release} (< 5.7) with tx checksum offload on {dev.name}: NATed "
                      "VXLAN packets get bad checksums (Service traffic across nodes stalls ~63 s; flannel#1279)",
                      f"ethtool -K {dev.name} tx-checksum-ip-generic off (again after each flanneld restart), "
                      "or upgrade the kernel to 5.7+")
    return M.ok(cid, title, f"kernel {f.kernel_release} (< 5.7) but tx checksum offload is off on {dev.name}")
