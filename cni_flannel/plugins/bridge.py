"""bridge (type ``bridge``): pods on a Linux bridge through veth pairs.

ADD     validate everything first (config, CNI_IFNAME free in the pod, the
        bridge name not taken by another kind of link); then: bridge up (MTU,
        promisc, VLAN filtering), veth ``veth<8 hex>`` <-> CNI_IFNAME with the
        host end on the bridge (hairpin, isolation, VLANs), IPAM (host-local
        in-process, others exec'd), container sysctls/addresses/routes, gateway
        address on the bridge (conflict rule, forceAddress), ip_forward,
        masquerade rules, wait for the port to come up; with macspoofchk,
        nftables rules dropping the pod's frames with another source MAC
        (bridge_spoofchk) right after the veth.  Any failure undoes
        every change made so far, in reverse (rules, IPAM, veth, and the
        bridge if this ADD made it and no other pod joined it meanwhile).
        Result: interfaces [bridge, host veth, container], ips -> interface 2.
DEL     remove CNI_IFNAME from the pod (if the netns is still there), release
        IPAM, remove the spoof-check and masquerade rules by chain name/comment; all of it
        also with an empty or deleted CNI_NETNS, and again and again.
CHECK   IPAM CHECK; the prevResult's bridge, container interface and host veth
        (peer of the container end, port of the bridge, hairpin as configured),
        MTU, addresses, routes (also gateway-less ones), masquerade and
        spoof-check rules.
STATUS  IPAM STATUS.  GC: masquerade and spoof-check rules of attachments not
        in the valid list, then IPAM GC.
"""

from __future__ import annotations

from typing import Callable, List, Tuple

from cni_flannel.cni import crashpoint
from cni_flannel.cni.request import Request
from cni_flannel.cni.result import DNS, Interface, Result
from cni_flannel.plugins import bridge_config, bridge_ipam, bridge_masq, bridge_spoofchk


class Rollback:
    """Undo actions recorded while ADD makes changes; run in reverse on failure."""

    def __init__(self) -> None:
        self.steps: List[Tuple[str, Callable[[], None]]] = []

    def __call__(self, what: str, fn: Callable[[], None]) -> None:
        self.steps.append((what, fn))

    def run(self) -> List[str]:
        failed = []
        for what, fn in reversed(self.steps):
            try:
                fn()
            except Exception as exc:  # keep undoing the rest; report in the log
                failed.append(f"{what}: {exc}")
        self.steps.clear()
        return failed


def add(req: Request) -> Result:
    conf = validate(req)
    from cni_flannel.net.handle import Handle
    from cni_flannel.plugins import bridge_link as bl

    undo = Rollback()
    with Handle() as node, Handle(req.netns) as pod:
        bl.bridge_if_usable(node, conf)
        if pod.find_link(req.ifname) is not None:
            from cni_flannel.cni.errors import InvalidConfig

            raise InvalidConfig(f"container veth name provided ({req.ifname}) already exists",
                                f"{req.netns} already has {req.ifname}; pick another CNI_IFNAME")
        try:
            br = bl.ensure_bridge(node, conf, undo)
            host, cont = bl.setup_veth(node, pod, conf, req.netns, req.ifname, br, undo)
            crashpoint.reached("bridge.veth")
            if conf.macspoofchk:
                undo("remove spoof-check rules",
                     lambda: bridge_spoofchk.teardown(req.container_id, req.ifname))
                bridge_spoofchk.setup(req.container_id, req.ifname, host.name, cont.mac)
                crashpoint.reached("bridge.spoofchk")
            result = Result(cni_version=req.config.cni_version)
            if conf.layer3:
                allocated = bridge_ipam.allocate(conf, req)
                undo("release IPAM", lambda: bridge_ipam.release(conf, req))
                crashpoint.reached("bridge.ipam")
                if not allocated.ips:
                    from cni_flannel.cni.errors import InternalError

                    raise InternalError("IPAM plugin returned missing IP config",
                                        f"{conf.ipam_type} allocated nothing")
                result, bridge_addrs = bl.gateways(allocated, conf)
                bl.configure_container(pod, conf, req.ifname, result)
                crashpoint.reached("bridge.container")
                for cidr in bridge_addrs:
                    bl.ensure_gateway_address(node, br, cidr, conf.force_address)
                if bridge_addrs:
                    bl.enable_forwarding(node, [4 if ":" not in a else 6 for a in bridge_addrs])
                if conf.ip_masq:
                    undo("remove masquerade rules",
                         lambda: bridge_masq.teardown(conf, req.container_id, req.ifname))
                    bridge_masq.setup(conf, req.container_id, req.ifname, result.ips)
                    crashpoint.reached("bridge.masq")
            elif not conf.disable_container_interface:
                pod.set_up(cont.index)
            if not conf.disable_container_interface:
                host = bl.wait_port_up(node, host.name)
            br = node.link(br.index)  # its MAC may change with the first port or address
            crashpoint.reached("bridge.done")
        except BaseException as exc:
            problems = undo.run()
            if problems:
                from cni_flannel.cni.log import logger

                logger().warning("bridge ADD rollback incomplete after %s: %s", exc, "; ".join(problems))
            raise
    dns = result.dns
    if conf.dns and any(conf.dns.get(k) for k in ("nameservers", "domain", "search", "options")):
        dns = DNS.from_dict(conf.dns)
    return Result(cni_version=req.config.cni_version,
                  interfaces=[Interface(name=br.name, mac=br.mac),
                              Interface(name=host.name, mac=host.mac),
                              Interface(name=cont.name, mac=cont.mac, sandbox=req.netns)],
                  ips=result.ips, routes=result.routes, dns=dns)


def validate(req: Request) -> "bridge_config.BridgeConfig":
    """Check everything ADD will need without changing anything (flannel runs this before saving
    the delegate config; ADD runs it first)."""
    conf = bridge_config.parse(req.config, req.args)
    if conf.layer3:
        bridge_ipam.validate(conf, req)
    if conf.macspoofchk:
        bridge_spoofchk.validate(req.container_id, req.ifname)
    return conf


def delete(req: Request) -> None:
    conf = bridge_config.parse(req.config, req.args)
    if req.netns:
        from cni_flannel.plugins.bridge_link import delete_container_iface

        delete_container_iface(req.netns, req.ifname)
    crashpoint.reached("bridge.del-iface")
    if conf.layer3:
        bridge_ipam.release(conf, req)
    if conf.macspoofchk:
        bridge_spoofchk.teardown(req.container_id, req.ifname)
    if conf.ip_masq:
        bridge_masq.teardown(conf, req.container_id, req.ifname)


def check(req: Request) -> None:
    conf = bridge_config.parse(req.config, req.args)
    from cni_flannel.plugins.bridge_check import check_attachment

    if conf.layer3:
        bridge_ipam.check(conf, req)
    check_attachment(conf, req)


def status(req: Request) -> None:
    conf = bridge_config.parse(req.config, req.args)
    if conf.layer3:
        bridge_ipam.status(conf, req)


def gc(req: Request) -> None:
    conf = bridge_config.parse(req.config, req.args)
    valid = req.valid_attachments
    if valid is None:
        return  # no list: nothing can be known to be stale
    if conf.ip_masq:
        bridge_masq.gc(conf, {cid for cid, _ in valid}, set(valid))
    if conf.macspoofchk:
        bridge_spoofchk.gc(conf.bridge, set(valid))
    if conf.layer3:
        bridge_ipam.gc(conf, req, valid)
