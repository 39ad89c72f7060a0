"""The agent: a resident process that runs plugin invocations for the binaries.

Start-up, not work, dominates a plugin run (pyroute2 alone imports in ~110 ms),
so the agent imports every plugin once and forks a worker per request.  The
worker joins the caller's network and mount namespaces (descriptors sent with
the request), takes the caller's environment and stdin, and runs the same
dispatcher (``skel.run``) the binary would have run — so results, on-disk
state and errors are the same either way; only the start-up cost moves.

Anything that goes wrong before the plugin code runs is answered with
``refused`` and the binary runs the request itself.  See ``cni/handoff.py``
for the wire format.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import time
from typing import Any, Dict, List

from .. import __version__
from ..cni import handoff

CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000

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
    names = list(PRELOAD) + [m.name for m in pkgutil.walk_packages(cni_flannel.__path__, "cni_flannel.")]
    for name in names:
        try:
            importlib.import_module(name)
        except Exception:  # a plugin not written yet must not stop the others
            missing.append(name)
    _warm_netlink()
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


def _setns(fd: int, kind: int) -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, kind) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _same_namespace(fd: int, kind: str) -> bool:
    mine = os.stat(f"/proc/self/ns/{kind}")
    theirs = os.fstat(fd)
    return (mine.st_dev, mine.st_ino) == (theirs.st_dev, theirs.st_ino)


def _peer_uid(conn: socket.socket) -> int:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


def handle(conn: socket.socket, accepted_at: float = 0.0) -> None:
    """Serve one request in this (forked, single-threaded) worker."""
    if _peer_uid(conn) != 0:  # before decoding anything: marshal trusts its input
        conn.sendall(handoff.encode({"refused": "only root may use the agent"}))
        return
    fds: List[int] = []
    request = handoff.recv_message(conn, fds)
    if request is None:
        return
    why = _refusal(request, fds)
    if why:
        conn.sendall(handoff.encode({"refused": why}))
        return
    try:
        net_fd, mnt_fd = fds[0], fds[1]
        if not _same_namespace(mnt_fd, "mnt"):
            _setns(mnt_fd, CLONE_NEWNS)
        if not _same_namespace(net_fd, "net"):
            _setns(net_fd, CLONE_NEWNET)
        os.chdir("/")
    except OSError as exc:
        conn.sendall(handoff.encode({"refused": f"cannot join the caller's namespaces: {exc}"}))
        return
    for fd in fds:
        os.close(fd)
    env: Dict[str, str] = request["env"]
    os.environ.clear()
    os.environ.update(env)
    from ..cni import skel

    started = time.monotonic()
    code, text = skel.render(*skel.run(request["plugin"], os.environ, request["stdin"]))
    conn.sendall(handoff.encode({"code": code, "stdout": text}))
    done = time.monotonic()
    _note(f"{request['plugin']} {env.get('CNI_COMMAND', '?')} {env.get('CNI_CONTAINERID', '-')} exit {code} "
          f"({(started - accepted_at) * 1000:.1f} ms to start, {(done - started) * 1000:.1f} ms to run)")


def _note(line: str) -> None:
    """One line per request on the agent's stderr (the daemon's log)."""
    try:
        os.write(2, f"cni-flannel agent[{os.getpid()}]: {line}\n".encode())
    except OSError:
        pass


def _refusal(request: Dict[str, Any], fds: List[int]) -> str:
    if request.get("proto") != handoff.PROTO or request.get("version") != __version__:
        return f"agent runs cni-flannel {__version__}, protocol {handoff.PROTO}"
    if len(fds) != 2 or not isinstance(request.get("env"), dict) or not isinstance(request.get("stdin"), bytes):
        return "malformed request"
    return ""


def serve(path: str, ready_fd: int = -1) -> None:
    """Accept requests on ``path`` until SIGTERM/SIGINT; a worker per request."""
    missing = preload()
    if missing:
        import sys

        sys.stderr.write(f"cni-flannel agent: could not preload {', '.join(missing)}\n")
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
    try:
        while True:
            conn, _ = server.accept()
            accepted_at = time.monotonic()
            pid = os.fork()
            if pid == 0:
                _worker(server, conn, accepted_at)
            conn.close()
    finally:
        server.close()
        try:
            os.unlink(path)
        except OSError:
            pass


def _exit_on_signal(signum: int, frame: Any) -> None:
    raise SystemExit(0)


def _worker(server: socket.socket, conn: socket.socket, accepted_at: float) -> None:
    code = 0
    try:
        server.close()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # subprocess needs to wait for its children
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        handle(conn, accepted_at)
    except BaseException as exc:  # a transport fault: let the binary run the request itself
        code = 1
        try:
            conn.sendall(handoff.encode({"refused": f"agent worker failed: {type(exc).__name__}: {exc}"}))
        except BaseException:
            pass
    finally:
        os._exit(code)
