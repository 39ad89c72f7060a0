"""The resident agent: same answers and state as the plugin itself, only faster to start."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from typing import Any, Dict

import pytest

from tests.conftest import AGENT_SOCKET, agent_requests, start_agent
from tests.harness.exec import run_plugin
from tests.harness.netns import remove_netns
from tests.harness.plugins import from_source

IPAM = {"cniVersion": "1.0.0", "name": "hl", "type": "host-local",
        "ipam": {"type": "host-local", "subnet": "10.244.7.0/24"}}


def _held(node: Any) -> Dict[str, str]:
    """address -> "containerID ifname" as host-local recorded it."""
    names = node.run(["ls", "/var/lib/cni/networks/hl"], check=False).stdout.split()
    return {n: node.read_file(f"/var/lib/cni/networks/hl/{n}").replace("\r\n", " ")
            for n in names if n.startswith("10.")}


def test_agent_and_in_process_give_the_same_results_and_state(node: Any, pod: Any) -> None:
    p = pod()
    agent = start_agent(node)
    via_agent = run_plugin("host-local", "ADD", IPAM, netns=p.path, node=node, container_id="a")
    in_proc = run_plugin("host-local", "ADD", IPAM, netns=p.path, node=node, container_id="b",
                         env_extra={"CNI_FLANNEL_AGENT": "off"})
    assert via_agent.rc == in_proc.rc == 0
    assert via_agent.json["ips"][0]["address"] == "10.244.7.2/24"
    assert in_proc.json["ips"][0]["address"] == "10.244.7.3/24"
    assert set(via_agent.json) == set(in_proc.json)
    assert _held(node) == {"10.244.7.2": "a eth0", "10.244.7.3": "b eth0"}
    # errors are the same documents too
    bad = dict(IPAM, ipam={"type": "host-local", "subnet": "10.244.7.0/33"})
    err_agent = run_plugin("host-local", "ADD", bad, netns=p.path, node=node, container_id="c")
    err_proc = run_plugin("host-local", "ADD", bad, netns=p.path, node=node, container_id="c",
                          env_extra={"CNI_FLANNEL_AGENT": "off"})
    assert (err_agent.rc, err_agent.json) == (err_proc.rc, err_proc.json) and err_agent.json["code"] == 7
    for cid in ("a", "b"):
        assert run_plugin("host-local", "DEL", IPAM, netns=p.path, node=node, container_id=cid).rc == 0
    assert _held(node) == {}
    agent.terminate()
    log = agent.communicate(timeout=10)[1].decode()
    assert "host-local ADD a exit 0" in log and "host-local DEL b exit 0" in log
    assert "host-local ADD b" not in log  # CNI_FLANNEL_AGENT=off ran in-process
    assert not node.exists(AGENT_SOCKET)  # removed on SIGTERM


def test_no_agent_means_in_process(node: Any, pod: Any) -> None:
    p = pod()
    node.write_file(AGENT_SOCKET, "")  # a stale file, nobody listening
    run = run_plugin("host-local", "ADD", IPAM, netns=p.path, node=node, container_id="a")
    assert run.rc == 0 and run.json["ips"][0]["address"] == "10.244.7.2/24"


def test_worker_killed_mid_request_kills_the_plugin_too(node: Any, pod: Any) -> None:
    p = pod()
    agent = start_agent(node)
    run = run_plugin("host-local", "ADD", IPAM, netns=p.path, node=node, container_id="a",
                     env_extra={"CNI_FLANNEL_CRASH_AT": "host-local.reserved"})
    assert run.killed, run
    assert agent.poll() is None  # the agent itself lives on
    again = run_plugin("host-local", "ADD", IPAM, netns=p.path, node=node, container_id="b")
    assert again.rc == 0


def test_agent_refuses_non_root_callers(node: Any, pod: Any) -> None:
    p = pod()
    start_agent(node)
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "n", "CNI_NETNS": p.path, "CNI_IFNAME": "eth0",
           "CNI_PATH": "/opt/cni/bin", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    # as nobody, the socket (mode 0600) cannot even be opened: the plugin falls back to in-process
    # and fails there for lack of privileges on /var/lib/cni, never through the agent
    done = node.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/opt/cni/bin/host-local"],
                    input=json.dumps(IPAM), env=env, check=False)
    assert done.returncode == 1 and '"code"' in done.stdout
    assert _held(node) == {}


def test_worker_joins_the_callers_network_namespace(node: Any, pod: Any) -> None:
    """A caller in another network namespace (sharing the node's files) gets its bridge there:
    the worker really setns()es into the caller's namespace, not the agent's."""
    agent = start_agent(node)
    alt = f"{node.netns}-alt"
    node.lab.add_finalizer(lambda: remove_netns(alt))
    subprocess.run(["ip", "netns", "add", alt], check=True)
    conf = {"cniVersion": "1.0.0", "name": "alt", "type": "bridge", "bridge": "cni9", "isGateway": True,
            "ipam": {"type": "host-local", "subnet": "10.244.9.0/24"}}
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "a", "CNI_NETNS": pod().path, "CNI_IFNAME": "eth0",
           "CNI_PATH": "/opt/cni/bin", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    done = subprocess.run(
        ["nsenter", f"--net=/run/netns/{alt}", f"--mount={node.mnt}", "--", "/opt/cni/bin/bridge"],
        input=json.dumps(conf).encode(), env=env, capture_output=True)
    assert done.returncode == 0, done
    in_alt = subprocess.run(["ip", "-n", alt, "link", "show", "cni9"], capture_output=True)
    assert in_alt.returncode == 0, "the bridge is not in the caller's namespace"
    assert node.run(["ip", "link", "show", "cni9"], check=False).returncode != 0  # nor in the agent's
    assert "10.244.9.2" in node.run(["ls", "/var/lib/cni/networks/alt"]).stdout  # the node's files
    agent.terminate()
    assert "bridge ADD a exit 0" in agent.communicate(timeout=10)[1].decode()  # not a fallback


def test_worker_needs_none_of_its_own_files_after_joining_the_caller(make_node: Any, pod: Any,
                                                                      plugin_dir: Any) -> None:
    """In production the agent runs in its own container and its workers join the host's mount
    namespace, where the agent's bundle is not visible: everything a request needs must be
    imported before the join.  Here the agent runs from dist/cni in the machine's mount namespace
    while the caller's (the node's) mount namespace hides that directory."""
    if from_source():
        pytest.skip("needs the frozen build (a source-tree agent cannot hide its own files)")
    node = make_node()
    sock = f"{node.lab.run_dir}/agent.sock"  # a plain file in a directory both namespaces see
    agent = subprocess.Popen(["nsenter", f"--net={node.path}", "--", str(plugin_dir / "flannel"), "agent",
                              "--socket", sock], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    node.lab.add_finalizer(agent.kill)
    deadline = time.monotonic() + 20
    while not os.path.exists(sock):
        assert agent.poll() is None and time.monotonic() < deadline, "agent did not start"
        time.sleep(0.05)
    node.run(["mount", "-t", "tmpfs", "hidden", str(plugin_dir)])  # only in the node's mount namespace
    assert node.run(["ls", "-A", str(plugin_dir)]).stdout == ""
    node.write_file("/run/flannel/subnet.env", "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\n"
                                               "FLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n")
    p = pod(node=node)
    env = {"CNI_FLANNEL_AGENT_SOCKET": sock}
    flannel = {"cniVersion": "1.0.0", "name": "cbr0", "type": "flannel", "delegate": {"hairpinMode": True}}
    add = run_plugin("flannel", "ADD", flannel, netns=p.path, node=node, container_id="c1", env_extra=env)
    assert add.rc == 0, add
    portmap = {"cniVersion": "1.0.0", "name": "cbr0", "type": "portmap", "prevResult": add.json,
               "runtimeConfig": {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}}
    for plugin, conf in (("portmap", portmap), ("flannel", flannel)):
        if plugin == "portmap":
            assert run_plugin(plugin, "ADD", conf, netns=p.path, node=node, container_id="c1", env_extra=env).rc == 0
        check = dict(conf, prevResult=add.json)
        assert run_plugin(plugin, "CHECK", check, netns=p.path, node=node, container_id="c1", env_extra=env).rc == 0
        assert run_plugin(plugin, "DEL", conf, netns=p.path, node=node, container_id="c1", env_extra=env).rc == 0
    agent.terminate()
    log = agent.communicate(timeout=10)[1].decode()
    for line in ("flannel ADD c1 exit 0", "portmap ADD c1 exit 0", "portmap CHECK c1 exit 0",
                 "flannel CHECK c1 exit 0", "portmap DEL c1 exit 0", "flannel DEL c1 exit 0"):
        assert line in log, log
    assert "CNI-DN-" not in node.run(["iptables-save", "-t", "nat"]).stdout


def _raw_request(node: Any, frame: bytes, fds: str = "ns") -> bytes:
    """Send ``frame`` to the node's agent from inside the node (fds: "ns" its namespaces, "files"
    two plain files, "none") and return what came back."""
    script = r"""
import os, socket, sys
frame = sys.stdin.buffer.read()
kind = sys.argv[1]
paths = {"ns": ["/proc/self/ns/net", "/proc/self/ns/mnt"], "files": ["/etc/hostname", "/etc/hosts"]}.get(kind, [])
fds = [os.open(p, os.O_RDONLY) for p in paths]
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[2])
anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, b"".join(fd.to_bytes(4, sys.byteorder) for fd in fds))] if fds else []
s.sendmsg([frame[:4]], anc)
s.sendall(frame[4:])
s.shutdown(socket.SHUT_WR)
out = b""
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    out += chunk
sys.stdout.buffer.write(out)
"""
    done = subprocess.run(["nsenter", f"--net={node.path}", f"--mount={node.mnt}", "--", "python3", "-c", script,
                           fds, AGENT_SOCKET], input=frame, capture_output=True, timeout=30, check=True)
    return done.stdout


def test_malformed_requests_are_refused_and_the_agent_lives_on(node: Any, pod: Any) -> None:
    from cni_flannel.cni import wire
    from tests.conftest import agent_requests

    agent = start_agent(node)
    good_env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "x", "CNI_NETNS": pod().path, "CNI_IFNAME": "eth0",
                "CNI_PATH": "/opt/cni/bin"}
    cases = [
        (b"\x00\x00\x00\x05hello", "ns", "malformed request"),
        ((wire.MAX_FRAME + 1).to_bytes(4, "big"), "ns", "exceeds"),
        (wire.encode_frame([b"x"] * 5), "ns", "not a cni-flannel hand-off request"),
        (wire.encode_request("0.0.0-other", "host-local", good_env, json.dumps(IPAM).encode()), "ns",
         "agent runs cni-flannel"),
        (wire.encode_request(__import__("cni_flannel").__version__, "host-local", good_env,
                             json.dumps(IPAM).encode()), "none", "expected 2 namespace descriptors"),
        (wire.encode_request(__import__("cni_flannel").__version__, "host-local", good_env,
                             json.dumps(IPAM).encode()), "files", "cannot join the caller's namespaces"),
    ]
    for frame, fds, why in cases:
        reply = _raw_request(node, frame, fds)
        assert wire.decode_reply(reply[4:]) is None, reply  # a refusal
        assert why in reply.decode(errors="replace"), reply
    assert agent.poll() is None
    refused = agent_requests(node)
    assert len(refused) == len(cases) and all(line.startswith("refused: ") for line in refused), refused
    assert _held(node) == {}  # nothing ran
    # ... and the next real request is served
    assert run_plugin("host-local", "ADD", IPAM, netns=pod().path, node=node, container_id="a").rc == 0
    assert agent_requests(node)[-1].startswith("host-local ADD a exit 0")


def test_agent_checks_the_callers_uid(node: Any, pod: Any) -> None:
    """Even when the socket is opened to everyone, a non-root caller is refused (SO_PEERCRED)
    and the plugin falls back to its own (unprivileged, failing) run."""
    from tests.conftest import agent_requests

    start_agent(node)
    node.run(["chmod", "0666", AGENT_SOCKET])
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "n", "CNI_NETNS": pod().path, "CNI_IFNAME": "eth0",
           "CNI_PATH": "/opt/cni/bin", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CNI_FLANNEL_LOG": "/dev/null"}
    done = node.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/opt/cni/bin/host-local"],
                    input=json.dumps(IPAM), env=env, check=False)
    assert done.returncode == 1 and '"code"' in done.stdout
    tries = 1 if from_source() else 2  # the static client, then the Python entry it falls back to
    assert agent_requests(node) == ["refused: caller uid 65534 may not use the agent"] * tries
    assert _held(node) == {}


def _peer_pid(node: Any, client_pid: int) -> int:
    """The process at the other end of ``client_pid``'s unix stream connection (ss -xp)."""
    inodes = {os.readlink(f"/proc/{client_pid}/fd/{fd}") for fd in os.listdir(f"/proc/{client_pid}/fd")}
    mine = [int(i[len("socket:["):-1]) for i in inodes if i.startswith("socket:[")]
    assert mine, f"client {client_pid} has no socket"
    for line in node.run(["ss", "-xpH"]).stdout.splitlines():
        for inode in mine:
            found = re.search(rf"\s\*\s+{inode}\s.*pid=(\d+)", line)
            if found and int(found.group(1)) != client_pid:
                return int(found.group(1))
    raise AssertionError(f"no peer of client {client_pid}'s sockets {mine}")


def test_worker_dies_with_a_killed_caller(node: Any, pod: Any) -> None:
    """A runtime that times out SIGKILLs the plugin and runs DEL: the worker must stop too, as an
    exec'd plugin would, instead of finishing its ADD afterwards and leaving state behind."""
    agent = start_agent(node, stderr=subprocess.DEVNULL)
    p = pod()
    conf = {"cniVersion": "1.0.0", "name": "slow", "type": "bridge", "bridge": "cni8",
            "ipam": {"type": "host-local", "subnet": "10.244.8.0/24"}}
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "k", "CNI_NETNS": p.path, "CNI_IFNAME": "eth0",
           "CNI_PATH": "/opt/cni/bin", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
           "CNI_FLANNEL_DELAY_AT": "bridge.veth:4"}  # the IP is reserved after this step
    client = node.popen(["/opt/cni/bin/bridge"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL, env=env)
    client.stdin.write(json.dumps(conf).encode())
    client.stdin.close()
    deadline = time.monotonic() + 10
    while node.run(["nsenter", f"--net={p.path}", "ip", "link", "show", "eth0"], check=False).returncode:
        assert client.poll() is None and time.monotonic() < deadline, "the ADD never reached its veth"
        time.sleep(0.05)
    worker = _peer_pid(node, client.pid)
    assert worker != agent.pid
    client.kill()
    killed_at = time.monotonic()
    while os.path.exists(f"/proc/{worker}"):
        assert time.monotonic() - killed_at < 2, "the worker outlived its killed caller"
        time.sleep(0.05)
    time.sleep(max(0.0, killed_at + 5 - time.monotonic()))  # well past the delay
    held = "/var/lib/cni/networks/slow"
    names = node.run(["ls", "-A", held]).stdout.split() if node.exists(held) else []
    assert not [n for n in names if n.startswith("10.")], names  # the step after the delay never ran
    assert "bridge ADD k killed: the caller hung up" in agent_requests(node)
    assert agent.poll() is None


def test_a_worker_serves_callers_one_after_another(node: Any, pod: Any) -> None:
    """A worker done with a request waits for the next caller instead of exiting (no fork and no
    copy-on-write faults for that one), and each caller still gets its own namespaces: the
    bridge lands in whichever network namespace the caller is in."""
    from tests.conftest import AGENT_LOG

    start_agent(node)
    alt = f"{node.netns}-alt"
    node.lab.add_finalizer(lambda: remove_netns(alt))
    subprocess.run(["ip", "netns", "add", alt], check=True)
    conf = {"cniVersion": "1.0.0", "name": "alt", "type": "bridge", "bridge": "cni9", "isGateway": True,
            "ipam": {"type": "host-local", "subnet": "10.244.9.0/24"}}
    p = pod()
    for i, netns in enumerate([f"/run/netns/{alt}", node.path] * 3):
        env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": f"c{i}", "CNI_NETNS": p.path, "CNI_IFNAME": f"eth{i}",
               "CNI_PATH": "/opt/cni/bin", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
        done = subprocess.run(["nsenter", f"--net={netns}", f"--mount={node.mnt}", "--", "/opt/cni/bin/bridge"],
                              input=json.dumps(conf).encode(), env=env, capture_output=True)
        assert done.returncode == 0, done
    assert subprocess.run(["ip", "-n", alt, "link", "show", "cni9"], capture_output=True).returncode == 0
    assert node.run(["ip", "link", "show", "cni9"], check=False).returncode == 0
    assert len(node.run(["ip", "-br", "link", "show", "master", "cni9"]).stdout.splitlines()) == 3
    lines = [line for line in node.read_file(AGENT_LOG).splitlines() if " bridge ADD " in line]
    assert len(lines) == 6, lines
    pids = {re.match(r"cni-flannel agent\[(\d+)\]", line).group(1) for line in lines}  # type: ignore[union-attr]
    assert len(pids) < len(lines), f"every request had a worker of its own: {lines}"
