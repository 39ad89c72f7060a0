"""The portmap meta-plugin (containernetworking/plugins plugins/meta/portmap), CNI 1.1.

Forwards host ports to the pod: ``runtimeConfig.portMappings``
``[{hostPort, containerPort, protocol, hostIP}]``; a chained plugin that
reads the pod's addresses from prevResult.

ADD     validate everything, then per family with a pod address apply the
        layout (iptables: nat CNI-HOSTPORT-DNAT / CNI-DN-<hash> /
        CNI-HOSTPORT-SETMARK / CNI-HOSTPORT-MASQ; nftables: ip/ip6
        cni_hostport) in one transaction, set route_localnet for 127.0.0.1
        (snat, IPv4), drop stale UDP conntrack entries; print prevResult.
        No mappings: prevResult passes through untouched.
DEL     remove this container's rules in both families — found by chain name
        and comment, so it works without runtimeConfig or prevResult — and
        drop UDP conntrack entries of the mapped ports.  Idempotent.
CHECK   every rule ADD would write is in place (the reference checks fewer).
GC      iptables: remove the rules of this network's containers that are not
        in cni.dev/valid-attachments.  nftables rules name only the container,
        not the network, so GC leaves them (it cannot tell another network's).
STATUS  ready when the chosen backend's tools are installed, else 50.
"""

from __future__ import annotations

import os
from typing import Dict, List

from cni_flannel.cni.errors import InternalError, InvalidConfig, NotAvailable
from cni_flannel.cni.log import logger
from cni_flannel.cni.request import Request
from cni_flannel.cni.result import Result
from cni_flannel.portmap import config as pmconfig
from cni_flannel.portmap import conntrack, iptables, localnet, nftables
from cni_flannel.portmap.config import IPTABLES, NFTABLES, PortmapConfig

#: executables that make a backend usable (either iptables flavour will do)
TOOLS = {IPTABLES: (("iptables-nft-restore", "iptables-nft-save"),
                    ("iptables-legacy-restore", "iptables-legacy-save")),
         NFTABLES: (("nft",),)}


def usable(backend: str) -> bool:
    """Cheap (no exec): are the backend's tools installed?"""
    from cni_flannel.firewall._exec import child_env

    dirs = [d for d in child_env()["PATH"].split(":") if d]
    found = lambda tool: any(os.access(os.path.join(d, tool), os.X_OK) for d in dirs)  # noqa: E731
    return any(all(found(t) for t in group) for group in TOOLS[backend])


def families_on_node() -> List[str]:
    """IPv6 only where the kernel has it (ip6tables fails without)."""
    return ["ipv4", "ipv6"] if os.path.exists("/proc/net/if_inet6") else ["ipv4"]


def firewall(backend: str):
    """The Firewall for the backend (hook for tests).  iptables: legacy or nft as the
    node uses (kube-proxy's rule); with no legacy table in this namespace that is nft,
    known without detect_mode's six saves."""
    from cni_flannel.firewall import IptablesFirewall, NftFirewall, backend_for
    from cni_flannel.firewall._iptables import legacy_unused

    if backend == NFTABLES:
        return NftFirewall()
    return IptablesFirewall("nft") if legacy_unused() else backend_for("iptables")


def _config(req: Request) -> PortmapConfig:
    return pmconfig.parse(req.config, req.ifname, usable)


def _container_rulesets(conf: PortmapConfig, container_id: str) -> list:
    build = nftables.container_ruleset if conf.backend == NFTABLES else iptables.container_ruleset
    return [build(conf, family, container_id) for family in pmconfig.FAMILIES if family in conf.container_nets]


def _owner_rulesets(conf: PortmapConfig, container_id: str) -> list:
    if conf.backend == NFTABLES:
        return [nftables.owner_ruleset(f, container_id) for f in families_on_node()]
    return [iptables.owner_ruleset(f, conf.network, container_id) for f in families_on_node()]


def add(req: Request) -> Result:
    conf = _config(req)
    prev = req.config.prev_result
    if prev is None:
        raise InvalidConfig("must be called as chained plugin", "portmap needs the prevResult of the plugin before it")
    if not conf.mappings:
        return prev
    rulesets = _container_rulesets(conf, req.container_id)  # all validated before anything runs
    fw = firewall(conf.backend)
    for ruleset in rulesets:
        fw.apply(ruleset)
    v4 = conf.container_nets.get("ipv4")
    if conf.snat and v4 is not None:
        localnet.enable_for(str(v4.ip))
    conntrack.flush_udp(conf.udp_host_ports(), [rs.family for rs in rulesets])
    logger().info("portmap: %s %s: %d mapping(s) via %s", conf.network, req.container_id,
                  len(conf.mappings), fw.name)
    return prev


def delete(req: Request) -> None:
    conf = _config(req)
    rulesets = _owner_rulesets(conf, req.container_id)
    fw = firewall(conf.backend)
    _each_at_once(fw.remove, rulesets)
    conntrack.flush_udp(conf.udp_host_ports(), [rs.family for rs in rulesets])


def _each_at_once(fn, items: list) -> None:
    """fn(item) for every item, each in a thread of its own (IPv4 and IPv6 tables are separate:
    a DEL's IPv6 snapshot no longer waits for the IPv4 commit, ~one command's time); the first
    item's error wins, as in a loop, but every item has been tried."""
    import threading

    errors: List[BaseException] = [None] * len(items)  # type: ignore[list-item]

    def one(i: int) -> None:
        try:
            fn(items[i])
        except BaseException as exc:  # re-raised below, in this thread
            errors[i] = exc

    threads = [threading.Thread(target=one, args=(i,), name=f"portmap-del-{i}") for i in range(1, len(items))]
    for t in threads:
        t.start()
    try:
        if items:
            one(0)
    finally:
        for t in threads:
            t.join()
    for exc in errors:
        if exc is not None:
            raise exc


def check(req: Request) -> None:
    conf = _config(req)
    if req.config.prev_result is None:
        raise InvalidConfig("Required prevResult missing", "CHECK needs the prevResult of the plugin before it")
    if not conf.mappings:
        return
    rulesets = _container_rulesets(conf, req.container_id)
    fw = firewall(conf.backend)
    problems: List[str] = []
    for ruleset in rulesets:
        problems += fw.check(ruleset)
    if problems:
        raise InternalError(f"portmap: {len(problems)} rule(s) of container {req.container_id} "
                            f"missing or wrong ({fw.name})", "; ".join(problems[:20]))


def gc(req: Request) -> None:
    conf = _config(req)
    keep = req.valid_attachments
    if keep is None or conf.backend == NFTABLES:
        return
    live = {cid for cid, _ in keep}
    fw = firewall(conf.backend)
    for family in families_on_node():
        stale = _stale_owners(fw.comments(family, iptables.TABLE), conf.network, live)
        if stale:
            logger().info("portmap gc: removing %s rules of %d container(s)", family, len(stale))
            fw.remove(iptables.stale_ruleset(family, stale))


def _stale_owners(comments: List[str], network: str, live: set) -> List[tuple]:
    owners: Dict[str, tuple] = {}
    for comment in comments:
        net, cid = iptables.owner_of(comment)
        if net == network and cid and cid not in live:
            owners[cid] = (net, cid)
    return [owners[c] for c in sorted(owners)]


def status(req: Request) -> None:
    conf = _config(req)
    if not usable(conf.backend):
        tools = " or ".join("+".join(group) for group in TOOLS[conf.backend])
        raise NotAvailable(f"portmap: the {conf.backend} backend is not usable: {tools} not found",
                           "install iptables or nftables on the node")

