"""The seed's observations, live: commands shown before their output, bounded captures, pings, iperf3.

Every capture is bounded twice: tcpdump's own -c, and a deadline after which it is interrupted
(plus `timeout` around it, should the demo itself die).  A capture that must see packets and
saw none raises DemoError; one that must see nothing is checked as explicitly.
"""
from __future__ import annotations

import os
import select
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import IO, List, Optional, Sequence, Union

from demo.progress import DemoError, Progress
from demo.transcript import iperf3_receiver_bps, packets_captured, ping_ttls
from tests.harness.netns import Node, Pod

Where = Union[Node, Pod]
SERVER = """
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(__import__("sys").argv[1]))); s.listen(8); print("listening", flush=True)
while True:
    c, peer = s.accept(); c.sendall(f"hello from the pod (you are {peer[0]})".encode()); c.close()
"""
CLIENT = """
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3); print(s.recv(200).decode())
"""


def label(where: Where) -> str:
    return where.name if isinstance(where, Node) else f"pod {where.name}"


def shown(argv: Sequence[str]) -> str:
    return " ".join(shlex.quote(a) for a in argv)


def read_until(stream: Optional[IO[bytes]], text: str, timeout: float) -> str:
    """What a process writes to a pipe until it has written text, closed it, or timeout passed.

    Raw os.read on the descriptor: a buffered readline could take two lines at once and leave
    select() waiting for one that already arrived."""
    seen = ""
    deadline = time.monotonic() + timeout
    while text not in seen and stream is not None:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([stream], [], [], left)[0]:
            break
        chunk = os.read(stream.fileno(), 4096).decode(errors="replace")
        if not chunk:
            break
        seen += chunk
    return seen


@dataclass
class Capture:
    """A running tcpdump; use start()/finish() around the traffic it should (or should not) see."""
    node: Node
    dev: str
    expr: str
    count: int
    verbose: bool = False
    timeout: float = 8.0
    proc: Optional[subprocess.Popen] = None
    err: List[str] = field(default_factory=list)

    @property
    def argv(self) -> List[str]:
        return ["tcpdump", "-n", "-l", *(["-v"] if self.verbose else []), "-i", self.dev,
                "-c", str(self.count), self.expr]

    def start(self) -> "Capture":
        # `timeout` bounds it even if this process dies before finish(); SIGINT makes tcpdump
        # print its "N packets captured" line.
        self.proc = self.node.popen(["timeout", "-s", "INT", str(int(self.timeout) + 5), *self.argv],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.err.append(read_until(self.proc.stderr, "listening on", 5))
        if "listening on" not in self.err[0]:
            self.proc.kill()
            raise DemoError(f"tcpdump on {self.node.name} {self.dev} did not start: {self.err[0].strip()}")
        return self

    def finish(self, wait: bool) -> "CaptureResult":
        """wait: give tcpdump until its deadline to reach -c; else stop it now (nothing expected)."""
        assert self.proc is not None
        if wait:
            try:
                self.proc.wait(self.timeout)
            except subprocess.TimeoutExpired:
                pass
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        out, err = self.proc.communicate(timeout=10)
        err_text = "".join(self.err) + err.decode(errors="replace")
        count = packets_captured(err_text)
        if count is None:
            raise DemoError(f"tcpdump on {self.node.name} {self.dev} ended without a packet count: {err_text}")
        return CaptureResult(self, out.decode(errors="replace"), err_text, count)


@dataclass
class CaptureResult:
    capture: Capture
    stdout: str
    stderr: str
    count: int

    def output(self) -> str:
        lines = [line for line in self.stderr.splitlines() if "listening on" in line]
        tail = [line for line in self.stderr.splitlines() if "packets captured" in line]
        return "\n".join(lines + self.stdout.rstrip("\n").splitlines() + tail)


@dataclass
class PingResult:
    ttls: List[int]
    output: str


class Observer:
    def __init__(self, progress: Progress) -> None:
        self.p = progress

    def show(self, where: Where, argv: Sequence[str]) -> str:
        """Run argv on a node or in a pod and print it with its output; a failing command raises."""
        done = where.run(list(argv), check=False)
        self.p.command(label(where), shown(argv), done.stdout + done.stderr)
        if done.returncode != 0:
            raise DemoError(f"`{shown(argv)}` on {label(where)} exited {done.returncode}")
        return done.stdout

    def ping(self, pod: Pod, addr: str, count: int = 4) -> PingResult:
        argv = ["ping", "-c", str(count), "-i", "0.2", "-W", "2", addr]
        done = pod.run(argv, check=False)
        self.p.command(label(pod), shown(argv), done.stdout + done.stderr)
        ttls = ping_ttls(done.stdout)
        if done.returncode != 0 or len(ttls) < count:
            raise DemoError(f"ping {addr} from pod {pod.name}: {len(ttls)} of {count} replies")
        return PingResult(ttls, done.stdout)

    def traffic_seen(self, captures: Sequence[Capture], silent: Sequence[Capture], traffic) -> None:
        """Start every capture, make the traffic, then require a full -c on each of `captures` and
        zero packets on each of `silent`; both kinds are printed as the commands they are."""
        for cap in [*captures, *silent]:
            cap.start()
        try:
            traffic()
        finally:
            results = [(cap, cap.finish(wait=True)) for cap in captures]
            quiet = [(cap, cap.finish(wait=False)) for cap in silent]
        for cap, res in results + quiet:
            self.p.command(cap.node.name, shown(cap.argv), res.output())
        for cap, res in results:
            self.p.check(res.count >= cap.count,
                         f"{res.count} of {cap.count} packets on {cap.node.name} {cap.dev} matching '{cap.expr}'")
        for cap, res in quiet:
            self.p.check(res.count == 0, f"nothing on {cap.node.name} {cap.dev} matching '{cap.expr}' "
                                         f"(captured {res.count})")

    def iperf3(self, client: Pod, server: Pod, addr: str, seconds: int = 3) -> float:
        """Pod-to-pod TCP throughput (bits/s) as the receiver measured it."""
        srv = subprocess.Popen(["ip", "netns", "exec", server.netns, "stdbuf", "-oL", "iperf3", "-s", "-1", "-p", "5201",
                                "--forceflush"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd="/")
        try:
            seen = read_until(srv.stdout, "listening", 10)
            if "listening" not in seen:
                raise DemoError(f"iperf3 server in pod {server.name} did not start: {seen.strip()}")
            argv = ["iperf3", "-c", addr, "-p", "5201", "-t", str(seconds), "--json"]
            done = client.run(argv, check=False, timeout=seconds + 30)
            try:
                bps = iperf3_receiver_bps(done.stdout)
            except (ValueError, KeyError) as exc:
                raise DemoError(f"iperf3 from pod {client.name}: {exc}; {done.stderr.strip()}") from None
            self.p.command(label(client), shown(argv), f"(JSON) receiver: {bps / 1e9:.2f} Gbit/s over {seconds} s")
            return bps
        finally:
            srv.kill()
            srv.wait()

    def hostport(self, server: Pod, port: int, from_node: Node, node_ip: str, host_port: int) -> str:
        """A server in `server` on `port`, reached from another node at node_ip:host_port (portmap's DNAT)."""
        srv = subprocess.Popen(["ip", "netns", "exec", server.netns, sys.executable, "-c", SERVER, str(port)],
                               stdout=subprocess.PIPE, cwd="/")
        try:
            if "listening" not in read_until(srv.stdout, "listening", 10):
                raise DemoError(f"server in pod {server.name} did not start")
            argv = [sys.executable, "-c", CLIENT, node_ip, str(host_port)]
            done = from_node.run(argv, check=False)
            self.p.command(from_node.name, f"python3 -c '<connect>' {node_ip} {host_port}",
                           done.stdout + done.stderr)
            reply = done.stdout.strip()
            self.p.check(reply.startswith("hello from the pod"),
                         f"hostPort {node_ip}:{host_port} reached pod {server.name} from {from_node.name}")
            return reply
        finally:
            srv.kill()
            srv.wait()
