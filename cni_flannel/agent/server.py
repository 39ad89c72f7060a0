"""The agent: a resident process that runs plugin invocations for the binaries.

Start-up, not work, dominates a plugin run (pyroute2 alone imports in ~110 ms),
so the agent imports every plugin once and keeps workers forked ahead (each waits
in accept(), so no request waits for a fork).  A worker serves callers one after
another (``worker.py``: what a request runs, and when a worker goes home or exits).

Anything that goes wrong before the plugin code runs — a caller that is not
root, a malformed frame (``cni/wire.py`` checks sizes and types first), a
version mismatch, namespaces it cannot join — is answered with ``refused``
and the binary runs the request itself; no request can end the agent.
"""

from __future__ import annotations

import gc
import os
import signal
import socket
import struct
import time
from typing import Any, Dict, List, Optional

from . import worker
from .notes import note, open_stderr

#: Everything a worker may need, imported before any request: after joining
#: the caller's mount namespace our own files may no longer be reachable.
PRELOAD = (
    "cni_flannel.cni.skel",
    "cni_flannel.cni.config",
    "cni_flannel.cni.request",
    "cni_flannel.cni.delegate",
    "cni_flannel.cni.log",
    "cni_flannel.plugins.flannel",
    "cni_flannel.plugins.bridge",
    "cni_flannel.plugins.host_local",
    "cni_flannel.plugins.portmap",
    "cni_flannel.plugins.loopback",
    "subprocess",
    "select",
    "threading",
    "logging",
    "ctypes",
)


#: Text encodings a worker may use: each is a module loaded on first use.
ENCODINGS = ("ascii", "latin-1", "utf-8", "idna")


def preload() -> List[str]:
    """Import every plugin and its dependencies; returns what could not be imported."""
    import importlib
    import pkgutil

    import cni_flannel

    missing = []
    names = list(PRELOAD) + [m.name for m in pkgutil.walk_packages(cni_flannel.__path__, "cni_flannel.")
                             if not m.name.endswith(".__main__")]  # importing one would run it
    for name in names:
        try:
            importlib.import_module(name)
        except (Exception, SystemExit):  # a module that cannot load must not stop the others
            missing.append(name)
    _warm_netlink()
    _libc_handle()
    from ..cni import log

    log.warm_up()
    import codecs

    for encoding in ENCODINGS:  # codecs load lazily too (e.g. str.encode("ascii") in netlink code)
        codecs.lookup(encoding)
    return missing


def _warm_netlink() -> None:
    """Import pyroute2's lazily-loaded pieces now rather than in every worker."""
    try:
        from cni_flannel.net import warm_up  # type: ignore[attr-defined]
    except ImportError:
        return
    warm_up()


def _libc_handle() -> Any:
    from ..net.ns import libc

    handle = libc()
    handle.prctl  # noqa: B018  (resolved here, before any fork, not in every worker)
    return handle


def serve(path: str, ready_fd: int = -1, request_log: Optional[str] = None, profile_dir: str = "") -> None:
    """Serve requests on ``path`` until SIGTERM/SIGINT with a pool of pre-forked workers.

    ``request_log``: a file that gets one line per request (served or refused), for tests
    and benchmarks to see that the agent — not a fallback — did the work."""
    if profile_dir:
        import cProfile  # noqa: F401  (workers may not see our files later)

        worker.profile_dir = os.path.abspath(profile_dir)
    missing = preload()
    if missing:
        import sys

        sys.stderr.write(f"cni-flannel agent: could not preload {', '.join(missing)}\n")
    log_fd = -1
    if request_log:  # opened here: workers write to it after joining another mount namespace
        log_fd = os.open(request_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    open_stderr()  # before the first worker is forked: they inherit it
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # workers are reaped by the kernel
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        server.bind(path)
    finally:
        os.umask(old_umask)
    server.listen(256)
    if ready_fd >= 0:
        os.write(ready_fd, b"ready\n")
        os.close(ready_fd)
    signal.signal(signal.SIGTERM, _exit_on_signal)
    pool = Pool(server, log_fd)
    try:
        while True:
            pool.refill()
            pool.wait()
    finally:
        pool.stop()
        server.close()
        try:
            os.unlink(path)
        except OSError:
            pass


#: Idle workers kept waiting in accept(): a request never waits for a fork of this (big)
#: process.  Two cover a pod's two plugins; workers done with a request come back on top.
POOL_SIZE = 2


class Pool:
    """The idle workers, as their own messages on a pipe tell: TAKEN (got a caller) and BACK
    (waiting again).  Forks one when fewer than POOL_SIZE wait."""

    def __init__(self, server: socket.socket, log_fd: int) -> None:
        import mmap

        self.server, self.log_fd = server, log_fd
        self.idle: Dict[int, float] = {}  # pid -> since when, of workers waiting in accept()
        self.pipe_r, self.pipe_w = os.pipe2(os.O_CLOEXEC)
        self.count = mmap.mmap(-1, 8)  # shared with the workers: how many wait (Home.idle_workers)
        self.home = worker.Home(self.count)

    def refill(self) -> None:
        while len(self.idle) < POOL_SIZE:
            # Everything the agent holds moves to the collector's permanent generation: a worker's
            # collection never walks (and so never copies, page by page) the inherited heap.
            gc.freeze()
            try:
                pid = os.fork()
            except OSError as exc:  # callers wait in the backlog; try again shortly
                note(f"cannot fork a worker: {exc}", self.log_fd)
                time.sleep(0.1)
                return
            if pid == 0:
                gc.disable()  # a worker's garbage goes with it (or stays small: MAX_REQUESTS)
                os.close(self.pipe_r)
                worker.run(self.server, self.pipe_w, self.log_fd, self.home)
            self.idle[pid] = time.monotonic()
            self._publish()

    def wait(self) -> None:
        """Until a worker took a caller or came back (or a second passed: then drop idle
        workers that died)."""
        import select

        ready, _, _ = select.select([self.pipe_r], [], [], 1.0)
        if ready:
            data = os.read(self.pipe_r, 4096)  # whole 8-byte messages: each write of one is atomic
            for i in range(0, len(data) - len(data) % 8, 8):
                word = int.from_bytes(data[i:i + 8], "little")
                pid = word & ~worker.BACK
                if word & worker.BACK:
                    self.idle[pid] = time.monotonic()
                else:
                    self.idle.pop(pid, None)
        else:
            for pid in list(self.idle):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:  # (SIGCHLD is ignored: a dead worker leaves no zombie)
                    del self.idle[pid]
        self._publish()

    def _publish(self) -> None:
        struct.pack_into("=q", self.count, 0, len(self.idle))

    def stop(self) -> None:
        for pid in self.idle:  # busy workers finish their request; idle ones have nothing to do
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def _exit_on_signal(signum: int, frame: Any) -> None:
    raise SystemExit(0)
