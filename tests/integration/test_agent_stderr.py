"""The agent's stderr is a log, never a gate: a reader that stops draining it holds up no request.

Found by crash injection on the agent path (tests/reliability/crashes.py): the test started the
agent with stderr=PIPE and never read it; after ~700 requests the 64 KiB pipe was full, every
worker blocked in write(2, "<request line>") before answering, and every ADD hung (caller in
recv(), worker in anon_pipe_write).  A container runtime's log pipe can stall the same way.
"""

from __future__ import annotations

import fcntl
import os
import socket
from typing import Any, Tuple

import pytest

from tests.conftest import agent_requests, forbid_fallback, start_agent
from tests.harness.exec import run_plugin

IPAM = {"cniVersion": "1.0.0", "name": "hl", "type": "host-local",
        "ipam": {"type": "host-local", "subnet": "10.244.7.0/24"}}
F_SETPIPE_SZ = 1031


def _pipe() -> Tuple[int, int]:
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, F_SETPIPE_SZ, 4096)  # one page: cheap to fill
    return read_end, write_end


def _socket() -> Tuple[int, int]:  # what journald gives a service as its stderr
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    theirs.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    return ours.detach(), theirs.detach()


def _fill(write_end: int) -> None:
    """Fill it without making the agent's descriptor non-blocking: O_NONBLOCK on ``write_end``
    itself would reach the agent's fd 2 too (same open file description) and hide the bug, so a
    pipe is filled through a description of our own, a socket with MSG_DONTWAIT."""
    if not _is_socket(write_end):
        filler = os.open(f"/proc/self/fd/{write_end}", os.O_WRONLY | os.O_NONBLOCK)
        try:
            while True:
                os.write(filler, b"x" * 512)
        except BlockingIOError:
            pass
        finally:
            os.close(filler)
        return
    sock = socket.socket(fileno=os.dup(write_end))
    try:
        while True:
            sock.send(b"x" * 512, socket.MSG_DONTWAIT)
    except BlockingIOError:
        pass
    finally:
        sock.close()


def _is_socket(fd: int) -> bool:
    import stat

    return stat.S_ISSOCK(os.fstat(fd).st_mode)


@pytest.mark.parametrize("kind", ["pipe", "socket"])
def test_a_full_stderr_holds_up_no_request(node: Any, pod: Any, kind: str) -> None:
    p = pod()
    read_end, write_end = _pipe() if kind == "pipe" else _socket()
    try:
        agent = start_agent(node, stderr=write_end)
        forbid_fallback(node)  # the agent must serve them, not the self-contained path
        _fill(write_end)  # nobody reads read_end from here on (it stays open: no EPIPE)
        for cid in ("a", "b", "c"):  # each worker writes its line to stderr before answering
            run = run_plugin("host-local", "ADD", IPAM, netns=p.path, node=node, container_id=cid, timeout=20)
            assert run.rc == 0, run
        assert [line.split(" (")[0] for line in agent_requests(node)] == [
            f"host-local ADD {cid} exit 0" for cid in ("a", "b", "c")]
        assert agent.poll() is None
    finally:
        os.close(read_end)
        os.close(write_end)
