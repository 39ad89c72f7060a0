"""What runs beside the storm's pods on its node: one in-process TCP server per pod (bound inside
the pod's namespace), hostPort probes from the node, a kube-proxy-style writer rewriting its own
chains, the daemon's masquerade resync loop, the firewall backend's selection and the node's state.

Sockets are made by a short-lived thread that has entered the namespace (setns), so 110 pods need
no 110 server processes: the sockets keep their namespace after the thread ends.
"""
from __future__ import annotations

import ctypes
import fcntl
import json
import os
import random
import re
import selectors
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from typing import Any, Callable, Dict, List, Optional, Tuple

from tests.harness.netns import Node, run
from tests.harness.plugins import REPO_ROOT

CLONE_NEWNET = 0x40000000
SIOCGIFADDR = 0x8915
CONTAINER_PORT = 8080
BACKENDS = ("iptables-nft", "iptables-legacy", "nftables")
IPTABLES_TOOLS = ("iptables", "iptables-save", "iptables-restore", "ip6tables", "ip6tables-save", "ip6tables-restore")
_libc = ctypes.CDLL(None, use_errno=True)


def in_netns(path: str, fn: Callable[[], Any]) -> Any:
    """fn() called in a fresh thread that entered the network namespace at path."""
    box: Dict[str, Any] = {}

    def body() -> None:
        try:
            with open(path) as f:
                if _libc.setns(f.fileno(), CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns {path}")
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller
            box["error"] = exc

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def ipv4_of(ifname: str = "eth0") -> Optional[str]:
    """The interface's IPv4 address in the current namespace (None without one)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            raw = fcntl.ioctl(s.fileno(), SIOCGIFADDR, struct.pack("256s", ifname.encode()))
        except OSError:
            return None
    return socket.inet_ntoa(raw[20:24])


class PodServers:
    """One listening socket per pod on CONTAINER_PORT, answering each connection with the pod's
    token and closing it. One selector thread serves all of them."""

    def __init__(self) -> None:
        self.sel = selectors.DefaultSelector()
        self.socks: Dict[str, socket.socket] = {}
        self._lock = threading.Lock()
        self._stop = False
        self._wake_r, self._wake_w = socket.socketpair()
        self.sel.register(self._wake_r, selectors.EVENT_READ, None)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def listen(self, netns_path: str, token: str) -> None:
        def make() -> socket.socket:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("0.0.0.0", CONTAINER_PORT))
            s.listen(16)
            s.setblocking(False)
            return s
        sock = in_netns(netns_path, make)
        with self._lock:
            self.socks[token] = sock
            self.sel.register(sock, selectors.EVENT_READ, token)
        self._wake_w.send(b"x")

    def close(self, token: str) -> None:
        with self._lock:
            sock = self.socks.pop(token, None)
            if sock is not None:
                self.sel.unregister(sock)
                sock.close()

    def stop(self) -> None:
        self._stop = True
        self._wake_w.send(b"x")
        self.thread.join(10)
        for token in list(self.socks):
            self.close(token)

    def _serve(self) -> None:
        while not self._stop:
            for key, _ in self.sel.select(1.0):
                if key.data is None:
                    self._wake_r.recv(4096)
                    continue
                with self._lock:
                    if key.data not in self.socks:
                        continue
                    try:
                        conn, _ = key.fileobj.accept()
                    except OSError:
                        continue
                with conn:
                    conn.sendall(key.data.encode() + b"\n")


def probe_hostports(node_path: str, ip: str, ports: Dict[int, str], timeout: float = 2.0) -> Dict[int, str]:
    """From the node: connect to ip:port for each port; what answered (token, or the error)."""
    def one(port: int) -> str:
        try:
            with socket.create_connection((ip, port), timeout=timeout) as s:
                return s.recv(256).decode(errors="replace").strip()
        except OSError as exc:
            return f"error: {exc}"

    def all_ports() -> Dict[int, str]:
        return {port: one(port) for port in ports}
    return in_netns(node_path, all_ports)


def select_backend(node: Node, backend: str) -> None:
    """Make the node use one firewall backend, as an operator would: update-alternatives for the
    iptables tools (inside the node's mount namespace only: a copy of /etc/alternatives mounted over
    it) and the kubelet's KUBE-IPTABLES-HINT chain in mangle, which our plugins and flanneld read to
    pick legacy or nft the way kube-proxy's iptables-wrapper does.  nftables needs the conflist's
    portmap "backend" and flanneld's EnableNFTables (set by the caller)."""
    mode = "legacy" if backend == "iptables-legacy" else "nft"
    alt = f"{node.lab.run_dir}/{node.name}.alternatives"
    run(["cp", "-a", "/etc/alternatives", alt])
    for tool in IPTABLES_TOOLS:
        base, _, action = tool.partition("-")
        target = f"/usr/sbin/{base}-{mode}" + (f"-{action}" if action else "")
        os.unlink(f"{alt}/{tool}")
        os.symlink(target, f"{alt}/{tool}")
    node.run(["mount", "--bind", alt, "/etc/alternatives"])
    got = node.run(["iptables", "-V"]).stdout
    if ("(legacy)" if mode == "legacy" else "(nf_tables)") not in got:
        raise RuntimeError(f"the node's iptables is not {mode}: {got}")
    if backend != "nftables":
        node.run([f"iptables-{mode}", "-w", "-t", "mangle", "-N", "KUBE-IPTABLES-HINT"])


# --- kube-proxy: its own chains, rewritten in a loop ------------------------------------------------
SERVICE_IP = "10.96.0.10"
ENDPOINTS = ("10.244.9.11", "10.244.9.12", "10.244.9.13")  # never reached: only rules are written


def kube_proxy_iptables(endpoints: int) -> str:
    seps = [f"KUBE-SEP-STORM{i}" for i in range(len(ENDPOINTS))]
    nat = ["*nat", ":KUBE-SERVICES - [0:0]", ":KUBE-SVC-STORMDNS - [0:0]", ":KUBE-MARK-MASQ - [0:0]",
           *(f":{s} - [0:0]" for s in seps),
           "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000",
           f"-A KUBE-SERVICES -d {SERVICE_IP}/32 -p tcp -m comment --comment \"kube-system/dns cluster IP\" "
           "-m tcp --dport 53 -j KUBE-SVC-STORMDNS"]
    for i in range(endpoints):
        rest = endpoints - i
        prob = f"-m statistic --mode random --probability {1 / rest:.5f} " if rest > 1 else ""
        nat.append(f"-A KUBE-SVC-STORMDNS {prob}-j {seps[i]}")
    for sep, ep in zip(seps, ENDPOINTS):
        nat += [f"-A {sep} -s {ep}/32 -j KUBE-MARK-MASQ", f"-A {sep} -p tcp -m tcp -j DNAT --to-destination {ep}:53"]
    filt = ["*filter", ":KUBE-SERVICES - [0:0]", ":KUBE-FORWARD - [0:0]",
            "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP",
            "-A KUBE-FORWARD -m mark --mark 0x4000/0x4000 -j ACCEPT"]
    if endpoints == 0:
        filt.append(f"-A KUBE-SERVICES -d {SERVICE_IP}/32 -p tcp -m tcp --dport 53 -j REJECT --reject-with icmp-port-unreachable")
    return "\n".join(nat + ["COMMIT"] + filt + ["COMMIT", ""])


def kube_proxy_nft(endpoints: int) -> str:
    elems = ", ".join(f"{i} : goto endpoint-{i}" for i in range(endpoints))
    lines = ["add table ip kube-proxy", "flush table ip kube-proxy", "table ip kube-proxy {",
             "  chain nat-prerouting { type nat hook prerouting priority dstnat; policy accept; jump services; }",
             "  chain nat-output { type nat hook output priority -100; policy accept; jump services; }",
             "  chain filter-forward { type filter hook forward priority -110; policy accept; ct state invalid drop; }"]
    for i, ep in enumerate(ENDPOINTS):
        lines.append(f"  chain endpoint-{i} {{ ip saddr {ep} meta mark set mark or 0x4000; "
                     f"meta l4proto tcp dnat to {ep}:53; }}")
    if endpoints:
        lines.append(f"  chain service-dns {{ numgen random mod {endpoints} vmap {{ {elems} }}; }}")
        lines.append(f"  chain services {{ ip daddr {SERVICE_IP} tcp dport 53 goto service-dns; }}")
    else:
        lines.append(f"  chain service-dns {{ }}")
        lines.append(f"  chain services {{ ip daddr {SERVICE_IP} tcp dport 53 reject; }}")
    return "\n".join(lines + ["}", ""])


class KubeProxy:
    """Rewrites kube-proxy's own chains in a loop, with kube-proxy's lock flag (-w) for iptables;
    a random endpoint count each time.  stop() writes the full (3-endpoint) state once more."""

    def __init__(self, node: Node, backend: str, period: float = 0.2) -> None:
        self.node, self.backend, self.period = node, backend, period
        self.writes = 0
        self.lock_timeouts = 0  # -w 5 ran out: kube-proxy skips that sync and retries at the next one
        self.errors: List[str] = []
        self._stop = threading.Event()
        mode = "legacy" if backend == "iptables-legacy" else "nft"
        self.argv = ["nft", "-f", "-"] if backend == "nftables" else [f"iptables-{mode}-restore", "--noflush", "-w", "5"]
        self.write(len(ENDPOINTS))
        if backend != "nftables":  # kube-proxy's jumps from the base chains (outside its restore)
            for table, chain in (("nat", "PREROUTING"), ("nat", "OUTPUT"), ("filter", "FORWARD")):
                target = "KUBE-FORWARD" if chain == "FORWARD" else "KUBE-SERVICES"
                node.run([f"iptables-{mode}", "-w", "5", "-t", table, "-I", chain, "-m", "comment",
                          "--comment", "kubernetes service portals", "-j", target])
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def write(self, endpoints: int) -> None:
        text = kube_proxy_nft(endpoints) if self.backend == "nftables" else kube_proxy_iptables(endpoints)
        done = self.node.run(self.argv, input=text, check=False)
        if done.returncode != 0 and "xtables lock" in done.stderr:
            self.lock_timeouts += 1
        elif done.returncode != 0:
            self.errors.append(done.stderr.strip()[:200])
        self.writes += 1

    def _loop(self) -> None:
        rng = random.Random()
        while not self._stop.wait(self.period):
            self.write(rng.randrange(len(ENDPOINTS) + 1))

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(60)
        self.write(len(ENDPOINTS))


# --- flanneld's masquerade rules, resynced in a loop ---------------------------------------------
MASQ_LOOP = r"""
import json, signal, sys, time
from cni_flannel.daemon.masq import MasqConfig, MasqManager
stop = []
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
mgr = MasqManager(MasqConfig(networks=("10.244.0.0/16",), subnets=("10.244.1.0/24",), enable_nftables=NFT))
mgr.reconcile()
print("ready", flush=True)
n = missing = errors = 0
while not stop:
    try:
        gone = mgr.check()          # flanneld's periodic ensure: were our rules still all there?
        missing += bool(gone)
        mgr.reconcile() if n % 2 else mgr.apply()
    except Exception as exc:
        errors += 1
        print(repr(exc)[:300], file=sys.stderr, flush=True)
    n += 1
    time.sleep(0.1)
print(json.dumps({"resyncs": n, "found_missing": missing, "errors": errors}), flush=True)
"""


class MasqResync:
    """flanneld's masquerade/forward rules (cni_flannel.daemon.masq, the code flanneld runs): reconcile
    once, then check + apply/reconcile in a loop.  found_missing counts checks that saw our rules
    clobbered by another writer."""

    def __init__(self, node: Node, nftables: bool) -> None:
        code = MASQ_LOOP.replace("NFT", "True" if nftables else "False")
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": str(REPO_ROOT)}
        python = str(REPO_ROOT / ".venv" / "bin" / "python")
        self.proc = node.popen([python if os.path.exists(python) else sys.executable, "-c", code], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"masquerade loop did not start: {line}{self.proc.stderr.read()}")

    def stop(self) -> Dict[str, Any]:
        self.proc.terminate()
        out, err = self.proc.communicate(timeout=60)
        try:
            stats = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            stats = {"resyncs": 0, "found_missing": 0, "errors": 1}
        stats["stderr"] = err.strip().splitlines()[:3]
        return stats


# --- the node's state ----------------------------------------------------------------------------
STATE_SCRIPT = r"""set -eo pipefail
d=/var/lib/cni/networks/cbr0; if test -d $d; then ls -A $d | grep -v -e '^lock$' -e '^last_reserved_ip' || true; fi
echo ==; ip -o link show | awk -F': ' '{print $2}' | sed 's/@.*//'
echo ==; if test -d /var/lib/cni/flannel; then ls -A /var/lib/cni/flannel; fi
echo ==; for t in iptables-legacy-save ip6tables-legacy-save iptables-nft-save ip6tables-nft-save; do
  $t | sed -E '/^#/d; s/\[[0-9]+:[0-9]+\]//' | sed "s/^/$t /"; done
echo ==; nft list ruleset | sed -E 's/counter packets [0-9]+ bytes [0-9]+/counter/'
"""
XT_TABLES = {"filter", "nat", "mangle", "raw", "security"}  # iptables-nft's, read by iptables-nft-save


def _nft_tables(text: str) -> List[str]:
    """nft list ruleset, minus iptables-nft's tables and kube-proxy's: one line per rule, prefixed
    with its table and chain."""
    out, table, chain = [], "", ""
    for line in text.splitlines():
        s = line.strip()
        if line.startswith("table "):
            table, chain = s[6:].rstrip(" {"), ""
        elif s.startswith("chain "):
            chain = s[6:].rstrip(" {")
        skip = table.split()[-1:] in ([t] for t in XT_TABLES | {"kube-proxy"}) and table.split()[0] in ("ip", "ip6")
        if s and s != "}" and not skip:
            out.append(f"{table}/{chain}: {s}")
    return out


def node_state(node: Node) -> Dict[str, Counter]:
    """IP files, links, saved flannel configs, iptables rules (legacy and nft), nft rules — kube-proxy's
    own chains left out (its writer changes them all the time)."""
    parts = node.run(["bash", "-c", STATE_SCRIPT], timeout=120).stdout.split("==\n")
    ipt = [l for l in parts[3].splitlines() if l.strip() and "KUBE-" not in l]
    return {"ip_files": Counter(l for l in parts[0].splitlines() if l.strip()),
            "links": Counter(l for l in parts[1].splitlines() if l.strip()),
            "saved_configs": Counter(l for l in parts[2].splitlines() if l.strip()),
            "iptables_rules": Counter(ipt), "nft_rules": Counter(_nft_tables(parts[4]))}


def diff(now: Dict[str, Counter], base: Dict[str, Counter]) -> Dict[str, List[str]]:
    """What is in now and not in base (leftovers), and what base had that is gone (lost)."""
    out: Dict[str, List[str]] = {}
    for key in base:
        extra = sorted((now[key] - base[key]).elements())
        lost = sorted((base[key] - now[key]).elements())
        if extra:
            out[key] = extra
        if lost:
            out[f"lost:{key}"] = lost
    return out


def ipam_files(node: Node) -> Dict[str, str]:
    """host-local's reservations: address -> container ID."""
    script = ("d=/var/lib/cni/networks/cbr0; test -d $d || exit 0; cd $d; for f in *; do "
              "case $f in lock|last_reserved_ip*) continue;; esac; printf '%s %s\\n' \"$f\" \"$(head -n1 \"$f\")\"; done")
    lines = node.run(["bash", "-c", script]).stdout.splitlines()
    return dict(tuple(l.split(" ", 1)) if " " in l else (l, "") for l in lines if l.strip())


def hostports_in(node: Node, backend: str) -> Dict[int, int]:
    """hostPort -> DNAT rules for it in the chosen backend's own listing (proves no silent fallback
    to another backend), plus 0 -> flanneld's masquerade rules found there."""
    if backend == "nftables":
        text = node.run(["bash", "-c", "nft list table ip cni_hostport; nft list table ip flannel-ipv4"]).stdout
        ports = re.findall(r"dport (\d+) .*dnat", text)
        masq = text.count("masquerade")
    else:
        text = node.run([f"iptables-{'legacy' if backend == 'iptables-legacy' else 'nft'}-save", "-t", "nat"]).stdout
        ports = re.findall(r"--dport (\d+) .*-j DNAT", text)
        masq = len(re.findall(r"^-A FLANNEL-POSTRTG .*MASQUERADE", text, re.M))
    found = Counter(int(p) for p in ports)
    found[0] = masq
    return dict(found)


IDLE_WCHAN = "__skb_wait_for_more_packets"  # a worker waiting in accept() for its next caller


def agent_workers(node: Node, agent_pid: int) -> Tuple[int, int]:
    """The agent's workers: (idle in accept(), busy).  Idle ones are its pool, kept by design (up to
    MAX_IDLE); a worker busy long after the last request returned is a stuck one."""
    out = node.run(["bash", "-c", f"for p in $(pgrep -P {agent_pid}); do cat /proc/$p/wchan 2>/dev/null; echo; done"]).stdout
    states = [l.strip() for l in out.splitlines() if l.strip()]
    idle = sum(1 for w in states if w == IDLE_WCHAN)
    return idle, len(states) - idle


def wait_until(check: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def split_error(text: str) -> str:
    """A driver error's first useful line, for counting failures by kind."""
    for line in text.splitlines():
        if line.strip() and not line.startswith(("stdout: ", "nsenter", "/")):
            return line.strip()[:100]
    return text.strip()[:100]


__all__ = ["BACKENDS", "CONTAINER_PORT", "KubeProxy", "MasqResync", "PodServers", "agent_workers", "diff",
           "in_netns", "ipam_files", "ipv4_of", "node_state", "probe_hostports", "select_backend", "wait_until"]
