"""Nodes and pods made of namespaces, so tests never touch the host.

A :class:`Lab` owns everything one test creates, all named with a fresh
prefix (``cft`` + 4 hex digits) and removed by :meth:`Lab.close`:

* a **node** is a network namespace (``/run/netns/<prefix>-<node>``, lo up)
  plus a persistent private mount namespace (``/run/<prefix>/<node>.mnt``) in
  which NODE_DIRS are fresh tmpfs mounts and /sys shows the node's links. Its
  mount namespace is a slave of the host's, so pod namespaces created later
  under /run/netns are visible in it. Commands run in both namespaces, so a
  plugin sees the node's own default paths (/opt/cni/bin, /var/lib/cni, ...).
* a **pod** is a further network namespace ``<prefix>-<node>-<pod>``.
* the **underlay** is a bridge in namespace ``<prefix>-underlay``; a node
  joined to it has ``eth0`` with an address from 198.18.0.0/15.

The only host changes are empty mount-point directories (NODE_DIRS, created
when missing) and the /run/netns mount that ``ip netns`` itself makes.
"""
from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Union

PREFIX_BASE = "cft"
OWNED_RE = re.compile(r"^cft[0-9a-f]{4}(-|$)")  # names made from a prefix
NODE_DIRS = ("/run/flannel", "/var/lib/cni", "/etc/cni/net.d", "/opt/cni/bin", "/var/log")
UNDERLAY_PREFIXLEN = 15
UNDERLAY_BASE = "198.18.0."  # node i gets 198.18.0.i/15 (the bridge namespace holds no address)
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,9}$")
ICMP_SCRIPT = str(Path(__file__).with_name("icmp.py"))

Input = Union[str, bytes, None]


class CommandError(subprocess.CalledProcessError):
    def __str__(self) -> str:
        return (f"{' '.join(map(str, self.cmd))} exited {self.returncode}\n"
                f"stdout: {self.stdout}\nstderr: {self.stderr}")


def new_prefix() -> str:
    return PREFIX_BASE + secrets.token_hex(2)


def run(argv: Sequence[str], input: Input = None, env: Optional[Mapping[str, str]] = None,
        check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run argv; stdout/stderr come back as text. Raise CommandError if check and rc != 0."""
    data = input.encode() if isinstance(input, str) else input
    proc = subprocess.run(list(argv), input=data, capture_output=True, env=env,
                          timeout=timeout, cwd="/")
    done = subprocess.CompletedProcess(proc.args, proc.returncode,
                                       proc.stdout.decode(errors="replace"),
                                       proc.stderr.decode(errors="replace"))
    if check and done.returncode != 0:
        raise CommandError(done.returncode, done.args, done.stdout, done.stderr)
    return done


# --- primitives shared with cleanup.py --------------------------------------------------

def mount_points() -> List[str]:
    """Mount points of this mount namespace (os.path.ismount misses same-fs binds)."""
    with open("/proc/self/mountinfo") as f:
        return [re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), line.split()[4])
                for line in f]


def unmount_all(path: str) -> None:
    """Unmount every mount stacked on path."""
    while path in mount_points():
        run(["umount", path])


def netns_names() -> List[str]:
    return [line.split()[0] for line in run(["ip", "netns", "list"]).stdout.splitlines() if line]


def remove_netns(name: str) -> None:
    """SIGKILL what runs in the namespace (started by tests), then delete it."""
    for pid in run(["ip", "netns", "pids", name], check=False).stdout.split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass
    if name in netns_names():
        run(["ip", "netns", "delete", name])


@contextlib.contextmanager
def temp_netns(tag: str) -> Iterator[str]:
    """A bare network namespace ``cft<hex>-<tag>`` (no node around it), removed on exit."""
    name = f"{new_prefix()}-{tag}"
    run(["ip", "netns", "add", name])
    try:
        yield name
    finally:
        remove_netns(name)


def remove_run_dir(path: str) -> None:
    """Detach a lab's /run dir with the mount-namespace files on it, then delete it."""
    while path in mount_points():
        run(["umount", "--recursive", "--lazy", path])
    if os.path.isdir(path):
        shutil.rmtree(path)


# --- pods and nodes ---------------------------------------------------------------------

class Pod:
    def __init__(self, node: "Node", name: str):
        self.node = node
        self.name = name
        self.netns = f"{node.netns}-{name}"
        self.path = f"/run/netns/{self.netns}"

    def run(self, argv: Sequence[str], input: Input = None, env: Optional[Mapping[str, str]] = None,
            check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        return run(["ip", "netns", "exec", self.netns, *argv], input, env, check, timeout)

    def ping(self, addr: str, timeout: float = 2.0) -> bool:
        return self.run([sys.executable, ICMP_SCRIPT, addr, str(timeout)], check=False).returncode == 0

    def delete(self) -> None:
        remove_netns(self.netns)

    def netns_for_del(self, how: str) -> str:
        """CNI_NETNS for a DEL the way a runtime may send it: "netns" (the live namespace),
        "empty" (no CNI_NETNS), "deleted" (the namespace is removed first; its old path)."""
        if how == "deleted":
            self.delete()
        return "" if how == "empty" else self.path

    def __repr__(self) -> str:
        return f"Pod({self.netns})"


class Node:
    def __init__(self, lab: "Lab", name: str):
        self.lab = lab
        self.name = name
        self.netns = f"{lab.prefix}-{name}"
        self.path = f"/run/netns/{self.netns}"
        self.mnt = f"{lab.run_dir}/{name}.mnt"
        self.underlay_ip: Optional[str] = None
        self.pods: Dict[str, Pod] = {}

    def _create(self) -> None:
        run(["ip", "netns", "add", self.netns])  # first, so /run/netns is a shared mount
        run(["ip", "-n", self.netns, "link", "set", "lo", "up"])
        for d in NODE_DIRS:
            os.makedirs(d, exist_ok=True)
        Path(self.mnt).touch()
        mounts = "; ".join(f"mount -t tmpfs -o mode=0755 {self.name} {d}" for d in NODE_DIRS)
        run(["nsenter", f"--net={self.path}", "unshare", f"--mount={self.mnt}", "--propagation",
             "slave", "sh", "-ec", f"{mounts}; mount -t sysfs sysfs /sys"])

    def _enter(self, argv: Sequence[str]) -> List[str]:
        return ["nsenter", f"--net={self.path}", f"--mount={self.mnt}", "--", *argv]

    def run(self, argv: Sequence[str], input: Input = None, env: Optional[Mapping[str, str]] = None,
            check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run argv in the node's network and mount namespaces."""
        return run(self._enter(argv), input, env, check, timeout)

    def popen(self, argv: Sequence[str], **kwargs) -> subprocess.Popen:
        """Start a background process in the node; Lab.close kills it."""
        return subprocess.Popen(self._enter(argv), cwd="/", **kwargs)

    def write_file(self, path: str, text: Union[str, bytes], mode: int = 0o644) -> None:
        self.run(["sh", "-ec", 'mkdir -p "$(dirname "$1")"; cat > "$1"; chmod "$2" "$1"',
                  "sh", path, f"{mode:o}"], input=text)

    def read_file(self, path: str) -> str:
        return self.run(["cat", path]).stdout

    def exists(self, path: str) -> bool:
        return self.run(["test", "-e", path], check=False).returncode == 0

    def install_plugins(self, src_dir: Union[str, Path], names: Optional[Sequence[str]] = None) -> None:
        """Copy plugins from src_dir into the node's /opt/cni/bin, symlinks preserved.

        With names, only those executables are copied, plus every directory in
        src_dir (a frozen bundle's shared libraries live in one)."""
        src = Path(src_dir)
        entries = sorted(p.name for p in src.iterdir())
        if names is not None:
            entries = list(names) + [e for e in entries if (src / e).is_dir() and e not in names]
        self.run(["cp", "-a", "--", *(str(src / e) for e in entries), "/opt/cni/bin/"])

    def add_pod(self, name: Optional[str] = None) -> Pod:
        name = _check_name(name or f"p{len(self.pods) + 1}")
        pod = Pod(self, name)
        run(["ip", "netns", "add", pod.netns])
        self.pods[name] = pod
        return pod

    def ping(self, addr: str, timeout: float = 2.0) -> bool:
        return self.run([sys.executable, ICMP_SCRIPT, addr, str(timeout)], check=False).returncode == 0

    def _destroy(self) -> None:
        for pod in self.pods.values():
            pod.delete()
        remove_netns(self.netns)
        unmount_all(self.mnt)
        if os.path.exists(self.mnt):
            os.unlink(self.mnt)

    def __repr__(self) -> str:
        return f"Node({self.netns})"


class Lab:
    """Everything one test creates; use as a context manager or call close()."""

    def __init__(self, prefix: Optional[str] = None):
        self.prefix = prefix or new_prefix()
        self.run_dir = f"/run/{self.prefix}"
        self.nodes: Dict[str, Node] = {}
        self.underlay: Optional[str] = None
        self._finalizers: List[Callable[[], None]] = []

    def add_node(self, name: Optional[str] = None, underlay: bool = False) -> Node:
        name = _check_name(name or f"n{len(self.nodes) + 1}")
        if name in self.nodes:
            raise ValueError(f"node {name!r} exists already")
        self._ensure_run_dir()
        node = Node(self, name)
        self.nodes[name] = node
        node._create()
        if underlay:
            self.join_underlay(node)
        return node

    def join_underlay(self, node: Node) -> str:
        """Connect node's eth0 to the underlay bridge; return its address."""
        if self.underlay is None:
            self.underlay = f"{self.prefix}-underlay"
            run(["ip", "netns", "add", self.underlay])
            run(["ip", "-n", self.underlay, "link", "add", "br0", "type", "bridge"])
            run(["ip", "-n", self.underlay, "link", "set", "br0", "up"])
        index = list(self.nodes).index(node.name) + 1
        port, ul = f"to-{node.name}", ["ip", "-n", self.underlay]
        run([*ul, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", node.netns])
        run([*ul, "link", "set", port, "master", "br0", "up"])
        node.underlay_ip = f"{UNDERLAY_BASE}{index}"
        run(["ip", "-n", node.netns, "addr", "add", f"{node.underlay_ip}/{UNDERLAY_PREFIXLEN}", "dev", "eth0"])
        run(["ip", "-n", node.netns, "link", "set", "eth0", "up"])
        return node.underlay_ip

    def add_finalizer(self, fn: Callable[[], None]) -> None:
        """Run fn in close(), before the namespaces go (last added runs first)."""
        self._finalizers.append(fn)

    def close(self) -> None:
        """Remove everything, attempting every step; raise the first error afterwards."""
        steps: List[Callable[[], None]] = list(reversed(self._finalizers))
        steps += [node._destroy for node in self.nodes.values()]
        if self.underlay:
            steps.append(lambda: remove_netns(self.underlay))
        steps.append(self._sweep)
        steps.append(lambda: remove_run_dir(self.run_dir))
        errors = []
        for step in steps:
            try:
                step()
            except Exception as exc:  # keep tearing down; report afterwards
                errors.append(exc)
        self._finalizers, self.nodes = [], {}
        if errors:
            raise errors[0]

    def _sweep(self) -> None:
        """Namespaces of this lab that nothing tracks: an interrupt (the reliability runner's
        SIGTERM) can land after ``ip netns add`` made one and before its Node/Pod was kept."""
        for name in netns_names():
            if name.startswith(self.prefix + "-"):
                remove_netns(name)

    def _ensure_run_dir(self) -> None:
        # Mount-namespace files must live on a private mount.
        if self.run_dir not in mount_points():
            os.makedirs(self.run_dir, exist_ok=True)
            run(["mount", "--bind", self.run_dir, self.run_dir])
            run(["mount", "--make-private", self.run_dir])
        with open(os.path.join(self.run_dir, "owner"), "w") as f:  # cleanup spares labs of live runs
            f.write(str(os.getpid()))

    def __enter__(self) -> "Lab":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise ValueError(f"name {name!r} must match {NAME_RE.pattern} (it ends up in interface names)")
    return name
