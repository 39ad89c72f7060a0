"""The static hand-off client (native/, dist/cni/<plugin>): it only moves bytes.

Against a fake agent in this process (a socket both namespaces see) the tests read exactly what
the client sends (plugin, environment, stdin, its two namespace descriptors) and make it answer,
refuse, talk nonsense or die; against no agent they compare the client's fallback with the
PyInstaller entry run directly, byte for byte.  VERSION is compared with the Python answer for
every shape of stdin.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import pytest

from cni_flannel.cni import wire
from tests.harness.exec import run_plugin
from tests.harness.plugins import from_source

pytestmark = pytest.mark.skipif(from_source(), reason="the hand-off client exists only in the frozen build")

PYTHON_ENTRY = "/opt/cni/bin/.cni-flannel/cni-flannel"
LOOPBACK = {"cniVersion": "1.0.0", "name": "lo", "type": "loopback"}


class FakeAgent:
    """Accepts connections on ``path``; ``reply(request)`` gives the bytes to answer (None: hang up)."""

    def __init__(self, path: str, reply: Callable[[Dict[str, Any]], Optional[bytes]]) -> None:
        self.path = path
        self.reply = reply
        self.requests: List[Dict[str, Any]] = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(8)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                fds: List[int] = []
                body = wire.recv_frame(conn, fds)
                version, plugin, env, stdin = wire.decode_request(body)
                kinds = [os.readlink(f"/proc/self/fd/{fd}") for fd in fds]
                for fd in fds:
                    os.close(fd)
                request = {"version": version, "plugin": plugin, "env": env, "stdin": stdin, "fds": kinds}
                self.requests.append(request)
                answer = self.reply(request)
                if answer is not None:
                    conn.sendall(answer)

    def close(self) -> None:
        # Wake the accept() (shutdown makes it fail with EINVAL) and wait for the thread before the
        # descriptor is closed: a thread still on its way into accept() after close() would accept on
        # whatever socket reuses the number next -- a later test's fake agent -- and answer with this
        # agent's reply (seen once under load: a "nonsense" test got the earlier test's bytes).
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), f"fake agent {self.path} did not stop"
        self.sock.close()


@pytest.fixture
def fake_agent(node: Any):
    agents: List[FakeAgent] = []

    def start(reply: Callable[[Dict[str, Any]], Optional[bytes]]) -> FakeAgent:
        agent = FakeAgent(f"{node.lab.run_dir}/fake-agent-{len(agents)}.sock", reply)
        agents.append(agent)
        return agent

    yield start
    for agent in agents:
        agent.close()


def _run(node: Any, path: str, stdin: bytes, env: Dict[str, str], argv0: Optional[str] = None
         ) -> subprocess.CompletedProcess:
    """path in the node, stdout/stderr as bytes; argv0 given through bash's exec -a (for both
    sides of a comparison alike: bash adds the same variables to either)."""
    argv = ["bash", "-c", 'exec -a "$0" "$1"', argv0, path] if argv0 else [path]
    return subprocess.run(["nsenter", f"--net={node.path}", f"--mount={node.mnt}", "--", *argv], input=stdin,
                          env=env, capture_output=True, timeout=60)


def _ns(node: Any, kind: str) -> str:
    """'net:[inode]' of the node's namespace of that kind, as a descriptor of it reads."""
    return node.run(["readlink", f"/proc/self/ns/{kind}"]).stdout.strip()


def test_request_carries_plugin_env_stdin_and_the_callers_namespaces(node: Any, pod: Any, fake_agent: Any) -> None:
    agent = fake_agent(lambda req: wire.encode_result(3, b"agent's own bytes\n\x00\xff"))
    p = pod()
    stdin = json.dumps(dict(LOOPBACK, pad="x" * 300_000))  # more than one socket buffer
    env = {"CNI_FLANNEL_AGENT_SOCKET": agent.path, "ODD": "a=b=c"}
    done = _run(node, "/opt/cni/bin/portmap", stdin.encode(), {
        "CNI_COMMAND": "DEL", "CNI_CONTAINERID": "c1", "CNI_NETNS": p.path, "CNI_IFNAME": "eth0",
        "CNI_PATH": "/opt/cni/bin", **env})
    # the answer is printed as it came, with its exit code
    assert (done.returncode, done.stdout) == (3, b"agent's own bytes\n\x00\xff")
    [req] = agent.requests
    assert req["plugin"] == "portmap" and req["stdin"] == stdin.encode()
    assert req["env"] == {"CNI_COMMAND": "DEL", "CNI_CONTAINERID": "c1", "CNI_NETNS": p.path, "CNI_IFNAME": "eth0",
                          "CNI_PATH": "/opt/cni/bin", **env}
    assert req["fds"] == [_ns(node, "net"), _ns(node, "mnt")]  # the caller's, not ours
    assert req["fds"][0] != os.readlink("/proc/self/ns/net")


@pytest.mark.parametrize("how", ["refused", "nonsense", "old-marshal-agent"])
def test_refusal_or_nonsense_runs_the_plugin_itself_with_the_same_stdin(node: Any, pod: Any, fake_agent: Any,
                                                                         how: str) -> None:
    answers = {"refused": wire.encode_refusal("not today"),
               "nonsense": wire.encode_frame([b"ok", b"x", b""]),
               "old-marshal-agent": b"\x00\x00\x00\x05\xfbxxxx"}
    agent = fake_agent(lambda req: answers[how])
    p = pod()
    conf = dict(LOOPBACK, pad="y" * 200_000)  # stdin replayed to the Python entry from memory
    via_client = run_plugin("loopback", "ADD", conf, netns=p.path, node=node,
                            env_extra={"CNI_FLANNEL_AGENT_SOCKET": agent.path})
    # The client asked first; the Python entry (same protocol) normally asks once more, but that
    # second ask is best-effort (any transport error means "run in-process") and was seen missing
    # once under heavy load -- so at least the client's request, each with the very same stdin.
    assert 1 <= len(agent.requests) <= 2, agent.requests
    assert all(r["stdin"] == json.dumps(conf).encode() for r in agent.requests)
    assert via_client.rc == 0, via_client
    assert via_client.json["interfaces"][0]["name"] == "lo"
    direct = _run(node, PYTHON_ENTRY, json.dumps(conf).encode(), {
        "CNI_COMMAND": "ADD", "CNI_CONTAINERID": "cid", "CNI_NETNS": p.path, "CNI_IFNAME": "eth0",
        "CNI_PATH": "/opt/cni/bin", "CNI_FLANNEL_AGENT": "off", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
        argv0="loopback")
    assert via_client.stdout == direct.stdout.decode()


def test_worker_gone_mid_request_kills_the_client(node: Any, pod: Any, fake_agent: Any) -> None:
    agent = fake_agent(lambda req: None)  # reads the request, hangs up without an answer
    p = pod()
    run = run_plugin("loopback", "ADD", LOOPBACK, netns=p.path, node=node,
                     env_extra={"CNI_FLANNEL_AGENT_SOCKET": agent.path})
    assert run.killed and len(agent.requests) == 1, run  # and nothing ran in its place


def test_agent_off_and_version_never_connect(node: Any, pod: Any, fake_agent: Any) -> None:
    agent = fake_agent(lambda req: wire.encode_result(0, b"from the agent"))
    p = pod()
    off = run_plugin("loopback", "ADD", LOOPBACK, netns=p.path, node=node,
                     env_extra={"CNI_FLANNEL_AGENT_SOCKET": agent.path, "CNI_FLANNEL_AGENT": "off"})
    assert off.rc == 0 and off.json["interfaces"][0]["name"] == "lo"
    version = run_plugin("loopback", "VERSION", {"cniVersion": "0.4.0"}, node=node,
                         env_extra={"CNI_FLANNEL_AGENT_SOCKET": agent.path})
    assert version.json["cniVersion"] == "0.4.0"
    assert agent.requests == []


# --- without an agent: the fallback is the PyInstaller entry, byte for byte ----------------------

CASES = [
    ("loopback", "ADD", json.dumps(LOOPBACK)),
    ("loopback", "CHECK", json.dumps(dict(LOOPBACK, prevResult={"cniVersion": "1.0.0"}))),
    ("loopback", "DEL", json.dumps(LOOPBACK)),
    ("host-local", "ADD", '{"cniVersion": "1.0.0", "name": "hl", "type": "host-local", "ipam": {"subnet": "10.9.0.0/33"}}'),
    ("bridge", "ADD", "{not json"),
    ("flannel", "ADD", '{"cniVersion": "1.0.0", "name": "cbr0", "type": "flannel"}'),  # no subnet.env: code 11
    ("portmap", "FROB", json.dumps(LOOPBACK)),
    ("flannel", "STATUS", '{"cniVersion": "1.1.0", "name": "cbr0", "type": "flannel"}'),
]


@pytest.mark.parametrize("plugin,command,stdin", CASES, ids=[f"{c[0]}-{c[1]}-{i}" for i, c in enumerate(CASES)])
def test_fallback_is_byte_identical_to_the_pyinstaller_entry(node: Any, pod: Any, plugin: str, command: str,
                                                               stdin: str) -> None:
    p = pod()
    env = {"CNI_COMMAND": command, "CNI_CONTAINERID": "c1", "CNI_NETNS": p.path, "CNI_IFNAME": "eth0",
           "CNI_PATH": "/opt/cni/bin", "CNI_FLANNEL_LOG": "/dev/null"}
    assert not node.exists("/run/flannel/cni-agent.sock")
    client = _run(node, f"/opt/cni/bin/{plugin}", stdin.encode(), env, argv0=plugin)
    direct = _run(node, PYTHON_ENTRY, stdin.encode(), env, argv0=plugin)
    assert (client.returncode, client.stdout, client.stderr) == (direct.returncode, direct.stdout, direct.stderr)
    assert client.stdout or (command, client.returncode) == ("DEL", 0)  # a result, an error, or a DEL's nothing


# --- VERSION: answered by the client, the same JSON as Python's ---------------------------------

VERSION_STDINS = [b"", b"  \n", b"{}", b" { } ", b'{"cniVersion":"1.1.0"}', b'{"cniVersion":"0.3.1"}',
                  b'{ "cniVersion" : "0.1.0" }\n', b'{"cniVersion":""}', b'{"cniVersion":"9.9.9"}',
                  b'{"cniVersion":"1.0"}', b'{"cniVersion":"..."}', b'{"cniVersion":"1.0.0","name":"x"}',
                  b'{"cniVersion":1}', b'{"cniVersion":null}', b"[]", b"garbage", b"\xef\xbb\xbf{}",
                  b'{"cniVersion":"1.1.\\u0030"}', b'{"cniVersion":"0.4.0"} x', b'{"cniVersion":"0.4.0"',
                  b'{"cniVersion":"0.4.0","cniVersion":"0.3.0"}', b"\x00", b"{}" + b" " * 70000]


@pytest.mark.parametrize("stdin", VERSION_STDINS, ids=range(len(VERSION_STDINS)))
def test_version_is_pythons_answer(dist_cni: Path, stdin: bytes) -> None:
    env = {"CNI_COMMAND": "VERSION", "PATH": "/usr/bin:/bin"}
    client = subprocess.run([str(dist_cni / "bridge")], input=stdin, env=env, capture_output=True)
    python = subprocess.run(["bridge"], executable=str(dist_cni / ".cni-flannel" / "cni-flannel"), input=stdin,
                            env=env, capture_output=True)
    assert (client.returncode, client.stdout, client.stderr) == (python.returncode, python.stdout, python.stderr)
    assert client.returncode == 0


@pytest.fixture(scope="module")
def dist_cni(plugin_dir: Path) -> Path:
    return plugin_dir
