"""The agent's one line per request: on its stderr (the daemon's log) and in its request log."""

from __future__ import annotations

import os
import socket
from typing import Optional

#: Where request lines go on stderr without ever waiting (open_stderr); -1: plain fd 2.
_stderr_fd = -1
_stderr_sock: Optional[socket.socket] = None


def open_stderr() -> None:
    """Make our stderr lines non-blocking, for this agent and the workers it forks.

    Workers note a request before answering it.  With a blocking fd 2, a reader that stops
    draining our stderr (a stalled log pipe; a test that never reads it) froze every worker in
    write() once the 64 KiB pipe was full, and every caller with it, forever.  A line is worth
    less than a pod: when the reader is behind, the line is dropped (the request log, a file,
    keeps it).  O_NONBLOCK on fd 2 itself would also change the descriptor our children (and
    whoever shares it) write to, so a pipe is reopened as a description of its own, and a
    socket (journald) is sent to with MSG_DONTWAIT."""
    global _stderr_fd, _stderr_sock
    import stat

    try:
        mode = os.fstat(2).st_mode
        if stat.S_ISFIFO(mode):
            _stderr_fd = os.open("/proc/self/fd/2", os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        elif stat.S_ISSOCK(mode):
            _stderr_sock = socket.socket(fileno=os.dup(2))
    except OSError:  # no /proc, no fd 2: plain writes (a file or a terminal)
        pass


def note(line: str, log_fd: int = -1) -> None:
    """One line on the agent's stderr and in its request log (log_fd, when >= 0)."""
    data = f"cni-flannel agent[{os.getpid()}]: {line}\n".encode("utf-8", "replace")
    for fd in (_stderr_fd if _stderr_fd >= 0 else 2, log_fd):
        if fd < 0:
            continue
        try:
            if fd == 2 and _stderr_sock is not None:
                _stderr_sock.send(data, socket.MSG_DONTWAIT)
            else:
                os.write(fd, data)  # one write: lines of concurrent workers never interleave (O_APPEND)
        except OSError:  # EAGAIN (reader behind), EPIPE (no reader): the line is dropped
            pass
