"""make demo: pods on two simulated nodes, set up by our frozen flannel binary, talking.

Everything happens in network namespaces this script creates (prefix cft…) and
removes at the end; the machine's own network is never touched.

  node1 (198.18.0.1)  subnet 10.244.1.0/24 ──┐ underlay bridge ┌── node2 (198.18.0.2) subnet 10.244.2.0/24
     pod a, pod b on cni0                     └─────────────────┘    pod c, pod d on cni0

Per node, as kube-flannel does: the initContainer copy (packaging/install.sh)
puts the binaries in /opt/cni/bin and 10-flannel.conflist in /etc/cni/net.d.
The daemon's vxlan backend (cni_flannel/daemon/backends) sets up flannel.1 on
each node and programs the other node as its peer; the daemon's lease managers
and main loop are not written yet, so this script hands it the two leases and
writes /run/flannel/subnet.env as flanneld would.  Pods are created through
containerd's own CNI library (go-cni); pod a also gets a hostPort (portmap).
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from typing import Dict, List, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.conftest import start_agent  # noqa: E402
from tests.harness import drivers  # noqa: E402
from tests.harness.netns import Lab, Node, Pod  # noqa: E402

NETWORK = "10.244.0.0/16"
VXLAN_MTU = 1450  # the underlay's 1500 minus vxlan's 50
HOST_PORT = 30080
SERVER = """
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8080)); s.listen(8); print("listening", flush=True)
while True:
    c, peer = s.accept(); c.sendall(f"hello from pod a (you are {peer[0]})".encode()); c.close()
"""
CLIENT = """
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3); print(s.recv(200).decode())
"""
SUBNETS = {"node1": "10.244.1.1/24", "node2": "10.244.2.1/24"}
BOLD, DIM, GREEN, RED, END = ("\033[1m", "\033[2m", "\033[32m", "\033[31m", "\033[0m") if sys.stdout.isatty() else ("",) * 5


def say(text: str) -> None:
    print(f"\n{BOLD}== {text}{END}", flush=True)


def show(node: Node, argv: List[str]) -> None:
    out = node.run(argv, check=False).stdout.rstrip()
    print(f"{DIM}[{node.name}]$ {' '.join(argv)}{END}")
    for line in out.splitlines():
        print(f"    {line}")


def install(node: Node) -> None:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PLUGINS": "flannel loopback portmap",
           "SRC": os.path.join(ROOT, "dist", "cni")}
    node.run(["sh", os.path.join(ROOT, "packaging", "install.sh")], env=env)


class Backend:
    """The daemon's backend driver (python -m cni_flannel.daemon.backends) running in a node."""

    def __init__(self, lab: Lab, node: Node) -> None:
        argv = [sys.executable, "-m", "cni_flannel.daemon.backends", "--backend", json.dumps({"Type": "vxlan"}),
                "--network", NETWORK]
        self.proc = node.popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                               env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": ROOT})
        lab.add_finalizer(self.proc.kill)

    def call(self, op: str, **fields: object) -> Dict[str, object]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"op": op, **fields}) + "\n")
        self.proc.stdin.flush()
        reply = json.loads(self.proc.stdout.readline() or "{}")
        if not reply.get("ok"):
            raise RuntimeError(f"backend {op} failed: {reply}")
        return reply


def main() -> int:
    with Lab() as lab:
        nodes = {name: lab.add_node(name, underlay=True) for name in SUBNETS}
        say("Two nodes on an underlay (network namespaces with their own /opt/cni/bin, /var/lib/cni, /run/flannel)")
        for name, node in nodes.items():
            install(node)
            node.write_file("/run/flannel/subnet.env",
                            f"FLANNEL_NETWORK={NETWORK}\nFLANNEL_SUBNET={SUBNETS[name]}\n"
                            f"FLANNEL_MTU={VXLAN_MTU}\nFLANNEL_IPMASQ=true\n")
            print(f"  {name}: underlay {node.underlay_ip}, flannel subnet {SUBNETS[name]}")
        show(nodes["node1"], ["ls", "-A", "/opt/cni/bin", "/etc/cni/net.d"])
        show(nodes["node1"], ["cat", "/run/flannel/subnet.env"])

        say("The daemon's vxlan backend on each node: flannel.1, and the other node as a peer")
        leases = {}
        backends = {name: Backend(lab, node) for name, node in nodes.items()}
        for name, node in nodes.items():
            lease = {"Subnet": SUBNETS[name].replace(".1/24", ".0/24"), "PublicIP": node.underlay_ip,
                     "BackendType": "vxlan"}
            lease.update(backends[name].call("setup", lease=lease)["data"])
            leases[name] = lease
        for name in nodes:
            backends[name].call("reconcile", peers=[l for n, l in leases.items() if n != name])
        show(nodes["node1"], ["ip", "-d", "-br", "link", "show", "flannel.1"])
        show(nodes["node1"], ["sh", "-c", "ip route | grep flannel.1; bridge fdb show dev flannel.1; "
                                          "ip neigh show dev flannel.1"])

        say("The resident agent on node2 (node1's pods are set up by the binary alone)")
        start_agent(nodes["node2"])
        print("  node2: cni-flannel agent listening on /run/flannel/cni-agent.sock")

        say("Creating four pods through containerd's go-cni (conflist cbr0: flannel + portmap)")
        pods: Dict[str, Tuple[Pod, str]] = {}
        for name, node in [("a", nodes["node1"]), ("b", nodes["node1"]), ("c", nodes["node2"]), ("d", nodes["node2"])]:
            pod = node.add_pod(f"pod{name}")
            ports = [{"HostPort": HOST_PORT, "ContainerPort": 8080, "Protocol": "tcp"}] if name == "a" else None
            started = time.monotonic()
            result = drivers.gocni(node, "add", pod, cid=f"sandbox-{name}", pod_name=f"web-{name}", portmap=ports)
            took = (time.monotonic() - started) * 1000
            ip = result["Interfaces"]["eth0"]["IPConfigs"][0]["IP"]
            pods[name] = (pod, ip)
            extra = f", hostPort {HOST_PORT} -> 8080" if ports else ""
            print(f"  pod {name} on {node.name}: eth0 {ip}{extra}  ({took:.0f} ms through go-cni)")
        show(nodes["node1"], ["ip", "-br", "addr", "show", "cni0"])
        show(nodes["node1"], ["bridge", "link", "show"])
        show(nodes["node1"], ["sh", "-c", "ls /var/lib/cni/networks/cbr0; echo; cat /var/lib/cni/flannel/sandbox-a; echo"])
        show(nodes["node1"], ["ip", "route"])

        say("Every pod pings every other pod (same node: through cni0; other node: vxlan over the underlay)")
        failures = 0
        for (a, (pa, _)), (b, (_, ipb)) in itertools.permutations(pods.items(), 2):
            ok = pa.ping(ipb)
            failures += not ok
            same = pa.node is pods[b][0].node
            print(f"  {a} -> {b} {ipb:<12} {'same node ' if same else 'cross-node'}  "
                  f"{GREEN + 'ok' if ok else RED + 'FAILED'}{END}")

        say(f"hostPort: pod a serves on :8080; pod c connects to node1's address {nodes['node1'].underlay_ip}:{HOST_PORT}")
        srv = subprocess.Popen(["ip", "netns", "exec", pods["a"][0].netns, sys.executable, "-c", SERVER],
                               stdout=subprocess.PIPE)
        srv.stdout.readline()  # "listening"
        lab.add_finalizer(srv.kill)  # the server runs in pod a until the lab closes
        reply = pods["c"][0].run([sys.executable, "-c", CLIENT, nodes["node1"].underlay_ip, str(HOST_PORT)],
                                 check=False).stdout.strip()
        ok = reply.startswith("hello from pod a")
        failures += not ok
        print(f"  pod c -> {nodes['node1'].underlay_ip}:{HOST_PORT}: {reply or 'no answer'}  "
              f"{GREEN + 'ok' if ok else RED + 'FAILED'}{END}")
        show(nodes["node1"], ["sh", "-c", "iptables-save -t nat | grep -E 'CNI-HOSTPORT-DNAT|CNI-DN-' | head -6"])

        say("Deleting the pods (DEL through go-cni), then what is left on the nodes")
        for name, (pod, _) in pods.items():
            ports = [{"HostPort": HOST_PORT, "ContainerPort": 8080, "Protocol": "tcp"}] if name == "a" else None
            drivers.gocni(pod.node, "del", pod, cid=f"sandbox-{name}", pod_name=f"web-{name}", portmap=ports)
        for node in nodes.values():
            show(node, ["sh", "-c", "ls -A /var/lib/cni/flannel /var/lib/cni/networks/cbr0; "
                              "echo veths: $(ip -br link | grep -c veth); "
                              "echo CNI rules: $(iptables-save -t nat | grep -c 'CNI-DN-')"])
        say(f"{'All pods reached each other' if not failures else f'{failures} pings failed'}; removing the namespaces")
        return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
