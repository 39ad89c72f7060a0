"""diagnose(options) -> Report: collect the facts, run every check, never crash.

A check that raises is reported as "!" with the exception, so one unexpected state never
hides the other answers.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from typing import Callable, List

from cni_flannel.firewall import Runner

from . import checks_config as C
from . import checks_firewall as FW
from . import checks_leftovers as LO
from . import checks_node as N
from . import checks_peers as P
from . import model as M
from .collect import CannotInspect, Options, read_files, read_kernel, read_netlink, read_plugin_state
from .common import backend_type, vtep
from .facts import NodeFacts

CHECKS: List[Callable[[NodeFacts], M.Check]] = [
    C.subnet_env, C.daemon, C.lease, C.lease_expiry, C.net_conf,
    N.cni0_address, N.mtu_chain,
    N.br_netfilter, N.ip_forward, N.kernel_support, N.vxlan_offload,
    FW.iptables_mode, FW.forward_policy, FW.masquerade,
    P.peer_entries, P.stale_entries, P.peer_probe,
    LO.ipam_leaks, LO.saved_configs, LO.firewall_leftovers,
]


def collect(o: Options, runner: Runner) -> NodeFacts:
    from . import collect_fw, remote

    f = NodeFacts(node=o.node_name or socket.gethostname())
    read_files(f, o)
    read_netlink(f)
    read_kernel(f, o)
    read_plugin_state(f, o)
    families = sorted({"ipv6" if n.version == 6 else "ipv4" for n in (f.subnet_env.networks if f.subnet_env else [])}) or ["ipv4"]
    collect_fw.read_firewall(f, families, runner)
    remote.read_daemon(f, o)
    if o.etcd_endpoints:
        remote.read_etcd(f, o)
    elif o.kube_api_url:
        remote.read_kube(f, o)
    _probe(f, o)
    return f


def _probe(f: NodeFacts, o: Options) -> None:
    from .probe import probe

    if not o.probe:
        f.unavailable["probe"] = "--no-probe"
        return
    if backend_type(f) != "vxlan":
        f.unavailable["probe"] = "only vxlan peers have an address of their own to ping (<subnet>.0 on flannel.N)"
        return
    targets = []
    for family in (4, 6):
        if vtep(f, family) is None:
            continue
        peers, _ = P.expected_peers(f, family)
        targets += [(p.subnet, str(ipaddress.ip_network(p.subnet).network_address)) for p in peers]
    f.probes = probe(targets, o.probe_timeout)


def diagnose(o: Options, runner: Runner = None) -> M.Report:  # type: ignore[assignment]
    start = time.monotonic()
    try:
        facts = collect(o, runner or Runner())
    except CannotInspect as exc:
        return M.Report((), o.node_name or socket.gethostname(), time.monotonic() - start, error=str(exc))
    return M.Report(tuple(run_checks(facts)), facts.node, time.monotonic() - start)


def run_checks(facts: NodeFacts) -> List[M.Check]:
    out = []
    for check in CHECKS:
        try:
            out.append(check(facts))
        except Exception as exc:  # one odd state must not hide the other answers
            name = check.__name__.replace("_", "-")
            out.append(M.unknown(name, name, f"the check itself failed: {type(exc).__name__}: {exc}"))
    return out
