"""make demo: the seed field guide's flannel walkthrough, live, on three namespace nodes.

    python -m demo.demo [--modes vxlan,host-gw,udp]        (root; demo/demo.sh runs it)

A real etcd (Debian's etcd-server) on the underlay, our flanneld on each node (dist/cni/flanneld,
upstream's flags, network config from etcd), our plugins installed by kube-flannel's
initContainers' own commands (deploy/kube-flannel.yml) with the seed's cni-conf.json, pods created
through containerd's go-cni, and the three backends in turn, switched as the seed switches them.
Per mode it shows what the seed shows (each command before its output) and checks it: packets
where the seed sees them, none where it sees none.  Everything lives in network namespaces named
cft<hex>-* and in /run/cft<hex>, and is removed at the end — also after a failure, Ctrl-C, SIGTERM
or SIGHUP.  The machine's own network namespace is never touched.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import time
import traceback
from typing import List, Optional

if __package__ in (None, ""):  # run as a file: import the demo package from the repository root
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from demo.cluster import FLANNELD, Cluster  # noqa: E402
from demo.modes import MODES, ModeResult, Walkthrough, run_mode  # noqa: E402
from demo.progress import DemoError, Progress  # noqa: E402
from demo.report import table  # noqa: E402
from tests.harness.netns import Lab, netns_names  # noqa: E402

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="make demo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--modes", default=",".join(MODES),
                    help=f"comma-separated backends to show, in order (default: {','.join(MODES)})")
    args = ap.parse_args(argv)
    args.modes = [m for m in args.modes.split(",") if m]
    bad = [m for m in args.modes if m not in MODES]
    if bad or not args.modes:
        ap.error(f"--modes: {', '.join(bad) or 'none given'}; choose from {', '.join(MODES)}")
    return args


def unavailable(mode: str) -> Optional[str]:
    """Why a mode cannot be shown with this build, or None."""
    if not FLANNELD.exists():
        return f"{FLANNELD.relative_to(FLANNELD.parents[2])} is not built: our flanneld has not landed yet"
    from cni_flannel.daemon.backends import REGISTRY
    if mode not in REGISTRY:
        return f"flanneld has no {mode} backend yet (cni_flannel/daemon/backends REGISTRY: {', '.join(REGISTRY)})"
    return None


def interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def build(cluster: Cluster, p: Progress) -> None:
    p.section("The cluster: etcd, three nodes, what kube-flannel's DaemonSet puts on each")
    with p.step("three nodes on an underlay 198.18.0.0/15 (network + mount namespaces)"):
        cluster.make_nodes()
        for node in cluster.nodes.values():
            p.note(f"{node.name}: eth0 {node.underlay_ip}")
    with p.step("etcd on the underlay (198.18.0.254:2379)"):
        cluster.start_etcd()
    for node in cluster.nodes.values():
        with p.step(f"{node.name}: initContainers install-cni-plugin and install-cni"):
            cluster.install_cni(node)
    node1 = cluster.nodes["node1"]
    p.command("node1", "ls -A /opt/cni/bin /etc/cni/net.d",
              node1.run(["ls", "-A", "/opt/cni/bin", "/etc/cni/net.d"]).stdout)
    p.command("node1", "cat /etc/cni/net.d/10-flannel.conflist", node1.read_file("/etc/cni/net.d/10-flannel.conflist"))
    with p.step("the cni-agent container on every node (flannel agent)"):
        for node in cluster.nodes.values():
            cluster.start_agent(node)


def cleanup(lab: Lab, p: Progress) -> bool:
    """Remove everything; True when nothing of the lab is left."""
    try:
        with p.step(f"removing everything the demo made (namespaces {lab.prefix}-*, /run/{lab.prefix}, processes)"):
            lab.close()
    except Exception as exc:  # keep going: say what is left
        p.say(f"{p.red}cleanup error: {exc}{p.end}")
    left = [n for n in netns_names() if n.startswith(lab.prefix)] + \
        ([f"/run/{lab.prefix}"] if os.path.exists(f"/run/{lab.prefix}") else [])
    if left:
        p.say(f"{p.red}left behind: {' '.join(left)}{p.end}")
        return False
    p.say(f"cleanup: no namespace {lab.prefix}-* and no /run/{lab.prefix} left")
    return True


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("make demo: needs root (it creates network namespaces)", file=sys.stderr)
        return 2
    p = Progress()
    started = time.monotonic()
    previous = {s: signal.signal(s, interrupt) for s in SIGNALS}
    lab = Lab()
    results: List[ModeResult] = []
    rc = 0
    try:
        p.say(f"{p.bold}flannel, live: the seed walkthrough on three namespace nodes{p.end} "
              f"(prefix {lab.prefix}; modes {', '.join(args.modes)})")
        cluster = Cluster(lab, p)
        build(cluster, p)
        walk = Walkthrough(cluster, p)
        for mode in args.modes:
            try:
                results.append(run_mode(walk, mode, unavailable))
            except DemoError as exc:
                results.append(ModeResult(mode, status=f"FAILED: {str(exc).splitlines()[0]}"))
                raise
    except KeyboardInterrupt as exc:
        p.say(f"{p.red}interrupted ({exc or 'SIGINT'}){p.end}")
        rc = 130
    except DemoError as exc:
        p.say(f"{p.red}demo FAILED: {exc}{p.end}")
        rc = 1
    except Exception:  # an unexpected error: show it, still clean up
        p.say(f"{p.red}demo FAILED with an unexpected error:{p.end}\n{traceback.format_exc()}")
        rc = 1
    finally:
        for s in SIGNALS:  # a second Ctrl-C must not stop the cleanup halfway
            signal.signal(s, signal.SIG_IGN)
        try:
            if not cleanup(lab, p):
                rc = rc or 1
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
    if results:
        p.section("Summary: ours beside the seed's")
        for line in table(results):
            p.say("   " + line)
    p.say(f"\ndemo {'finished' if rc == 0 else 'ended'} in {time.monotonic() - started:.1f} s (exit {rc})")
    return rc


if __name__ == "__main__":
    sys.exit(main())
