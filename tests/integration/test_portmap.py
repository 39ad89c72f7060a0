"""portmap end to end in test namespaces: Debian's Go bridge + host-local (our
bridge is not there yet) with our portmap chained in a conflist, driven by
libcni and by containerd's go-cni; traffic from another node, hairpin from
the pod, 127.0.0.1 on the node, hostIP, IPv6, DEL, UDP takeover, and the
nftables backend."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Optional, Sequence

import pytest

from tests.harness import drivers
from tests.harness.netns import Node, Pod
from tests.harness.plugins import reference_dir

NET = "pmnet"
POD_V4, POD_V6 = "10.244.1.0/24", "fd00:10:244:1::/64"
NODE_V6, CLIENT_V6 = "2001:db8:18::1", "2001:db8:18::2"
EXTRA_V4 = "198.18.1.1"  # a second node address, for hostIP mappings

# Echo server for a pod: answers every TCP connection and UDP datagram on the
# given ports with its name; dual-stack sockets.  Prints "ready" when bound.
SERVER = r"""
import socket, sys, threading
name, tcp, udp = sys.argv[1], sys.argv[2].split(","), sys.argv[3].split(",")
def sock(kind, port):
    s = socket.socket(socket.AF_INET6, kind)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("::", int(port)))
    return s
def serve_tcp(s):
    s.listen(64)
    while True:
        c, _ = s.accept(); c.sendall(name.encode()); c.close()
def serve_udp(s):
    while True:
        _, peer = s.recvfrom(100); s.sendto(name.encode(), peer)
socks = [(serve_tcp, sock(socket.SOCK_STREAM, p)) for p in tcp if p] + \
        [(serve_udp, sock(socket.SOCK_DGRAM, p)) for p in udp if p]
for fn, s in socks:
    threading.Thread(target=fn, args=(s,), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"""

# Client: prints the reply of the server at addr:port, exits 1 without one.
CLIENT = r"""
import socket, sys
addr, port, proto, timeout, sport = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4]), int(sys.argv[5])
fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
s = socket.socket(fam, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.settimeout(timeout)
if sport:
    s.bind(("::" if fam == socket.AF_INET6 else "0.0.0.0", sport))
try:
    s.connect((addr, port))
    if proto == "udp":
        s.send(b"hi")
    print(s.recv(100).decode())
except OSError as e:
    print(e, file=sys.stderr); sys.exit(1)
"""


def conflist(portmap: Optional[dict] = None, name: str = NET) -> dict:
    return {"cniVersion": "1.0.0", "name": name, "plugins": [
        {"type": "bridge", "bridge": "cni0", "isGateway": True, "hairpinMode": True,
         "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_V4}], [{"subnet": POD_V6}]],
                  "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]}},
        dict({"type": "portmap", "capabilities": {"portMappings": True}}, **(portmap or {})),
    ]}


def ask(where, addr: str, port: int, proto: str = "tcp", timeout: float = 2.0, sport: int = 0) -> Optional[str]:
    """The answer at addr:port seen from a node or pod, None when nothing answers."""
    done = where.run([sys.executable, "-c", CLIENT, addr, str(port), proto, str(timeout), str(sport)],
                     check=False, timeout=timeout + 20)
    return done.stdout.strip() if done.returncode == 0 else None


def serve(pod: Pod, name: str, tcp: Sequence[int] = (80,), udp: Sequence[int] = (53,)) -> subprocess.Popen:
    proc = subprocess.Popen(["ip", "netns", "exec", pod.netns, sys.executable, "-c", SERVER, name,
                             ",".join(map(str, tcp)), ",".join(map(str, udp))],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    pod.node.lab.add_finalizer(lambda: (proc.kill(), proc.wait()))
    assert proc.stdout.readline().strip() == "ready"
    return proc


def add_v6_underlay(node: Node, addr: str) -> None:
    node.run(["ip", "addr", "add", f"{addr}/64", "dev", "eth0", "nodad"])


def rules_of(node: Node) -> str:
    out = node.run(["iptables-save", "-t", "nat"]).stdout + node.run(["ip6tables-save", "-t", "nat"]).stdout
    return out + node.run(["nft", "list", "ruleset"]).stdout


@pytest.fixture
def nodes(make_node, plugin_dir):
    """(node, client): node runs Go bridge/host-local/loopback + our portmap; client is
    another node on the underlay; both dual-stack."""
    node = make_node(underlay=True, plugins=reference_dir())
    node.install_plugins(plugin_dir, names=["portmap"])
    client = make_node(underlay=True, plugins=False)
    add_v6_underlay(node, NODE_V6)
    add_v6_underlay(client, CLIENT_V6)
    node.run(["ip", "addr", "add", f"{EXTRA_V4}/15", "dev", "eth0"])
    node.write_file("/etc/cni/net.d/10-pmnet.conflist", json.dumps(conflist()))
    return node, client


def libcni_add(node: Node, pod: Pod, cid: str, mappings: list) -> dict:
    return drivers.libcni(node, "add", NET, pod, cid=cid, capability_args={"portMappings": mappings})


def libcni_del(node: Node, pod, cid: str, mappings: list) -> None:
    drivers.libcni(node, "del", NET, pod, cid=cid, capability_args={"portMappings": mappings})


def pod_ip(result: dict, version: int) -> str:
    return next(ip["address"].split("/")[0] for ip in result["ips"] if (":" in ip["address"]) == (version == 6))


def wait_v6_ready(pod: Pod, timeout: float = 10.0) -> None:
    """Until the pod's IPv6 address and the gateway are usable (DAD on cni0); fails the
    test when they are still tentative after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        tentative = [ns for ns, dev in ((pod.node, "cni0"), (pod, "eth0"))
                     if "tentative" in ns.run(["ip", "-6", "addr", "show", "dev", dev]).stdout]
        if not tentative:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"IPv6 addresses still tentative after {timeout}s in {tentative}")
        time.sleep(0.1)


MAPS = [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
        {"hostPort": 5353, "containerPort": 53, "protocol": "udp"},
        {"hostPort": 9090, "containerPort": 80, "protocol": "tcp", "hostIP": EXTRA_V4}]


def test_libcni_bridge_portmap_end_to_end(nodes, pod):
    node, client = nodes
    p = pod(node=node)
    result = libcni_add(node, p, "c1", MAPS)
    serve(p, "pod1")
    wait_v6_ready(p)
    ul = node.underlay_ip
    # from another namespace, TCP and UDP, IPv4 and IPv6
    assert ask(client, ul, 8080) == "pod1"
    assert ask(client, ul, 5353, "udp") == "pod1"
    assert ask(client, NODE_V6, 8080) == "pod1"
    assert ask(client, NODE_V6, 5353, "udp") == "pod1"
    # hostIP: only that address
    assert ask(client, EXTRA_V4, 9090) == "pod1"
    assert ask(client, ul, 9090, timeout=1) is None
    # hairpin: the pod reaches itself through the node's address
    assert ask(p, ul, 8080) == "pod1"
    assert ask(p, ul, 5353, "udp") == "pod1"
    # localhost on the node (route_localnet on cni0)
    assert ask(node, "127.0.0.1", 8080) == "pod1"
    assert node.read_file("/proc/sys/net/ipv4/conf/cni0/route_localnet").strip() == "1"
    drivers.libcni(node, "check", NET, p, cid="c1", capability_args={"portMappings": MAPS})

    libcni_del(node, p, "c1", MAPS)
    assert ask(client, ul, 8080, timeout=1) is None
    assert ask(client, NODE_V6, 8080, timeout=1) is None
    assert ask(node, "127.0.0.1", 8080, timeout=1) is None
    rules = rules_of(node)
    from cni_flannel.firewall import dnat_chain_name

    assert "c1" not in rules and dnat_chain_name(NET, "c1") not in rules
    assert pod_ip(result, 4) not in rules
    libcni_del(node, p, "c1", MAPS)  # again: fine


def test_gocni_bridge_portmap(nodes, pod):
    node, client = nodes
    # go-cni's built-in loopback network needs a loopback plugin; Debian's is installed
    p = pod(node=node)
    maps = [{"HostPort": 8080, "ContainerPort": 80, "Protocol": "tcp"},
            {"HostPort": 5353, "ContainerPort": 53, "Protocol": "udp"}]
    drivers.gocni(node, "add", p, cid="sb1", portmap=maps)
    serve(p, "gocni-pod")
    assert ask(client, node.underlay_ip, 8080) == "gocni-pod"
    assert ask(client, node.underlay_ip, 5353, "udp") == "gocni-pod"
    assert ask(node, "127.0.0.1", 8080) == "gocni-pod"
    drivers.gocni(node, "del", p, cid="sb1", portmap=maps)
    assert ask(client, node.underlay_ip, 8080, timeout=1) is None
    assert "sb1" not in rules_of(node)


def test_del_without_runtime_config_or_netns(nodes, pod):
    node, client = nodes
    p = pod(node=node)
    libcni_add(node, p, "c1", MAPS[:1])
    serve(p, "pod1")
    assert ask(client, node.underlay_ip, 8080) == "pod1"
    conf = dict(conflist()["plugins"][1], cniVersion="1.0.0", name=NET)
    from tests.harness.exec import run_plugin

    done = run_plugin("portmap", "DEL", conf, container_id="c1", netns="", node=node)
    assert done.rc == 0, done
    assert ask(client, node.underlay_ip, 8080, timeout=1) is None
    assert "c1" not in rules_of(node)


def test_second_container_takes_over_a_udp_host_port(nodes, pod):
    node, client = nodes
    a, b = pod(node=node), pod(node=node)
    maps = [{"hostPort": 5353, "containerPort": 53, "protocol": "udp"}]
    libcni_add(node, a, "ca", maps)
    serve(a, "A")
    # the same client socket (source port) all along: one conntrack entry
    assert ask(client, node.underlay_ip, 5353, "udp", sport=40000) == "A"
    libcni_del(node, a, "ca", maps)
    libcni_add(node, b, "cb", maps)
    serve(b, "B")
    assert ask(client, node.underlay_ip, 5353, "udp", sport=40000) == "B"
    # without the flush the flow would stay pinned to A's (now unused) address
    listed = node.run(["conntrack", "-L", "-p", "udp", "--orig-port-dst", "5353"]).stdout
    assert "src=10.244.1.2 " not in listed


def test_nftables_backend_end_to_end(nodes, pod):
    node, client = nodes
    node.write_file("/etc/cni/net.d/10-pmnet.conflist", json.dumps(conflist({"backend": "nftables"})))
    p = pod(node=node)
    libcni_add(node, p, "c1", MAPS)
    serve(p, "nft-pod")
    wait_v6_ready(p)
    ul = node.underlay_ip
    assert ask(client, ul, 8080) == "nft-pod"
    assert ask(client, ul, 5353, "udp") == "nft-pod"
    assert ask(client, NODE_V6, 8080) == "nft-pod"
    assert ask(client, EXTRA_V4, 9090) == "nft-pod"
    assert ask(client, ul, 9090, timeout=1) is None
    assert ask(p, ul, 8080) == "nft-pod"
    assert ask(node, "127.0.0.1", 8080) == "nft-pod"
    assert "cni_hostport" in node.run(["nft", "list", "tables"]).stdout
    assert node.run(["iptables-save", "-t", "nat"]).stdout.count("CNI-HOSTPORT") == 0
    drivers.libcni(node, "check", NET, p, cid="c1", capability_args={"portMappings": MAPS})
    libcni_del(node, p, "c1", MAPS)
    assert ask(client, ul, 8080, timeout=1) is None
    assert '"c1"' not in node.run(["nft", "list", "ruleset"]).stdout


def test_nftables_does_not_capture_traffic_passing_through(nodes, pod):
    """GHSA-jv3w-x3r3-g6rm: forwarded traffic to another host's port must not be DNATed."""
    node, client = nodes
    node.write_file("/etc/cni/net.d/10-pmnet.conflist", json.dumps(conflist({"backend": "nftables"})))
    p, other = pod(node=node), pod(node=node)
    libcni_add(node, p, "c1", [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}])
    serve(p, "mapped")
    result = libcni_add(node, other, "c2", [])
    serve(other, "other", tcp=(8080,), udp=())
    # the client routes the pod network via the node: its packets to other:8080 pass through
    client.run(["ip", "route", "add", POD_V4, "via", node.underlay_ip])
    assert ask(client, pod_ip(result, 4), 8080) == "other"
