"""The agent: a resident process that runs plugin invocations for the binaries.

Start-up, not work, dominates a plugin run (pyroute2 alone imports in ~110 ms),
so the agent imports every plugin once and keeps workers forked ahead, one per
request (each waits in accept(), so no request waits for a fork).  The
worker joins the caller's network and mount namespaces (descriptors sent with
the request), takes the caller's environment and stdin, and runs the same
dispatcher (``skel.run``) the binary would have run — so results, on-disk
state and errors are the same either way; only the start-up cost moves.

Anything that goes wrong before the plugin code runs — a caller that is not
root, a malformed frame (``cni/wire.py`` checks sizes and types first), a
version mismatch, namespaces it cannot join — is answered with ``refused``
and the binary runs the request itself; no request can end the agent.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import time
from typing import Any, Dict, List, Optional, Tuple

from .. import __version__
from ..cni import wire

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


_libc = None


def _libc_handle() -> Any:
    global _libc
    import ctypes

    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def _setns(fd: int, kind: int) -> None:
    import ctypes

    if _libc_handle().setns(fd, kind) != 0:  # the kind makes the kernel check the descriptor's type
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _same_namespace(fd: int, kind: str) -> bool:
    mine = os.stat(f"/proc/self/ns/{kind}")
    theirs = os.fstat(fd)
    return (mine.st_dev, mine.st_ino) == (theirs.st_dev, theirs.st_ino)


def _peer_uid(conn: socket.socket) -> int:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


_running = False


class Refusal(Exception):
    """The request is not served: the caller runs it itself."""


#: Seconds a caller has to send its request once connected (a stuck caller must not pin a worker).
REQUEST_TIMEOUT = 30.0


def _receive(conn: socket.socket) -> Tuple[str, Dict[str, str], bytes]:
    """The request, checked, with this worker in the caller's namespaces; or Refusal."""
    uid = _peer_uid(conn)
    if uid not in (0, os.geteuid()):  # before reading a byte of it
        raise Refusal(f"caller uid {uid} may not use the agent")
    fds: List[int] = []
    try:
        conn.settimeout(REQUEST_TIMEOUT)
        try:
            body = wire.recv_frame(conn, fds)
        except socket.timeout:
            raise Refusal("no request within %.0f s" % REQUEST_TIMEOUT) from None
        if body is None:
            raise Refusal("caller hung up before sending a request")
        conn.settimeout(None)
        version, plugin, env, stdin = wire.decode_request(body)
        if version != __version__:
            raise Refusal(f"agent runs cni-flannel {__version__}, caller {version}")
        if len(fds) != 2:
            raise Refusal(f"expected 2 namespace descriptors, got {len(fds)}")
        try:
            if not _same_namespace(fds[1], "mnt"):
                _setns(fds[1], CLONE_NEWNS)
            if not _same_namespace(fds[0], "net"):
                _setns(fds[0], CLONE_NEWNET)
            os.chdir("/")
        except OSError as exc:
            raise Refusal(f"cannot join the caller's namespaces: {exc}") from None
        return plugin, env, stdin
    except wire.WireError as exc:
        raise Refusal(f"malformed request: {exc}") from None
    finally:
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass


def handle(conn: socket.socket, accepted_at: float = 0.0, log_fd: int = -1) -> None:
    """Serve one request in this (forked, single-threaded) worker."""
    try:
        plugin, env, stdin = _receive(conn)
    except Refusal as why:
        _note(f"refused: {why}", log_fd)
        conn.sendall(wire.encode_refusal(str(why)))
        return
    global _running
    _running = True  # from here on a failure must not make the caller run it a second time
    answered = _die_with_caller(conn, plugin, env, log_fd)
    os.environ.clear()
    os.environ.update(env)
    from ..cni import skel

    started = time.monotonic()
    if _profile_dir:
        code, text = _profiled(plugin, env, stdin)
    else:
        code, text = skel.render(*skel.run(plugin, os.environ, stdin))
    reply = wire.encode_result(code, text.encode() if text is not None else b"")
    done = time.monotonic()
    # logged before answering: once the caller has its answer, the line is there to read
    _note(f"{plugin} {env.get('CNI_COMMAND', '?')} {env.get('CNI_CONTAINERID', '-')} exit {code} "
          f"({(started - accepted_at) * 1000:.1f} ms to start, {(done - started) * 1000:.1f} ms to run)", log_fd)
    answered.set()  # the work is done: a caller leaving now costs nothing
    conn.sendall(reply)


def _die_with_caller(conn: socket.socket, plugin: str, env: Dict[str, str], log_fd: int) -> Any:
    """SIGKILL this worker as soon as its caller is gone; returns the event that ends the watch.

    A runtime that times out kills the plugin (the hand-off client) and runs DEL; a worker that
    went on would finish its ADD after that DEL and leave state behind (an IP file, chains).
    Killing it here is what killing an exec'd plugin does.  Only POLLHUP/POLLERR count: a closed
    unix stream peer gives POLLHUP, while a caller that merely shut its write side after sending
    gives POLLRDHUP alone (our clients do not, but that caller still waits for the answer)."""
    import select
    import threading

    answered = threading.Event()

    def watch() -> None:
        poller = select.poll()
        poller.register(conn.fileno(), select.POLLHUP | select.POLLERR)
        while not answered.is_set():
            if poller.poll(1000) and not answered.is_set():
                _note(f"{plugin} {env.get('CNI_COMMAND', '?')} {env.get('CNI_CONTAINERID', '-')} "
                      "killed: the caller hung up", log_fd)
                os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="caller-watch", daemon=True).start()
    return answered


#: --profile-dir: each worker's plugin run under cProfile, saved there (bench/chain/agent_profile.py)
_profile_dir = ""


def _profiled(plugin: str, env: Dict[str, str], stdin: bytes) -> Tuple[int, Optional[str]]:
    import cProfile

    from ..cni import skel

    prof = cProfile.Profile()
    out = prof.runcall(lambda: skel.render(*skel.run(plugin, os.environ, stdin)))
    prof.dump_stats(os.path.join(_profile_dir, f"{plugin}-{env.get('CNI_COMMAND', '?')}-{os.getpid()}.prof"))
    return out


#: Where request lines go on stderr without ever waiting (_open_stderr); -1: plain fd 2.
_stderr_fd = -1
_stderr_sock: Optional[socket.socket] = None


def _open_stderr() -> None:
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


def _note(line: str, log_fd: int = -1) -> None:
    """One line per request on the agent's stderr (the daemon's log) and in its request log."""
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


def serve(path: str, ready_fd: int = -1, request_log: Optional[str] = None, profile_dir: str = "") -> None:
    """Serve requests on ``path`` until SIGTERM/SIGINT; a (pre-forked) worker per request.

    ``request_log``: a file that gets one line per request (served or refused), for tests
    and benchmarks to see that the agent — not a fallback — did the work."""
    global _profile_dir
    if profile_dir:
        import cProfile  # noqa: F401  (workers may not see our files later)

        _profile_dir = os.path.abspath(profile_dir)
    missing = preload()
    if missing:
        import sys

        sys.stderr.write(f"cni-flannel agent: could not preload {', '.join(missing)}\n")
    log_fd = -1
    if request_log:  # opened here: workers write to it after joining another mount namespace
        log_fd = os.open(request_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    _open_stderr()  # before the first worker is forked: they inherit it
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
    idle: Dict[int, float] = {}  # pid -> when forked, of workers waiting in accept()
    taken_r, taken_w = os.pipe2(os.O_CLOEXEC)  # a worker writes its pid here once it has a caller
    try:
        while True:
            _refill(server, idle, taken_r, taken_w, log_fd)
            _wait_for_takers(taken_r, idle)
    finally:
        for pid in idle:  # busy workers finish their request; idle ones have nothing to do
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        server.close()
        try:
            os.unlink(path)
        except OSError:
            pass


#: Workers forked ahead, each blocked in accept(): a request never waits for a fork of this
#: (big) process, only for setns.  Two cover a pod's two plugins; more only cost fork time.
POOL_SIZE = 2


def _refill(server: socket.socket, idle: Dict[int, float], taken_r: int, taken_w: int, log_fd: int) -> None:
    while len(idle) < POOL_SIZE:
        try:
            pid = os.fork()
        except OSError as exc:  # callers wait in the backlog; try again shortly
            _note(f"cannot fork a worker: {exc}", log_fd)
            time.sleep(0.1)
            return
        if pid == 0:
            os.close(taken_r)
            _idle_worker(server, taken_w, log_fd)
        idle[pid] = time.monotonic()


def _wait_for_takers(taken_r: int, idle: Dict[int, float]) -> None:
    """Until a worker took a caller (or a second passed: then drop idle workers that died)."""
    import select

    ready, _, _ = select.select([taken_r], [], [], 1.0)
    if ready:
        data = os.read(taken_r, 4096)  # whole 8-byte pids: each write of one is atomic
        for i in range(0, len(data) - len(data) % 8, 8):
            idle.pop(int.from_bytes(data[i:i + 8], "little"), None)
        return
    for pid in list(idle):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:  # (SIGCHLD is ignored: a dead worker leaves no zombie)
            del idle[pid]


def _set_parent_death_signal(sig: int) -> None:
    try:
        _libc_handle().prctl(1, sig, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _idle_worker(server: socket.socket, taken_w: int, log_fd: int) -> None:
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        _set_parent_death_signal(signal.SIGKILL)  # an idle worker must not outlive the agent
        if os.getppid() == 1:
            os._exit(0)
        while True:
            try:
                conn, _ = server.accept()
                break
            except InterruptedError:
                continue
            except OSError as exc:  # EMFILE, ECONNABORTED...: log, breathe, go on
                _note(f"accept failed: {exc}", log_fd)
                time.sleep(0.05)
        accepted_at = time.monotonic()
        _set_parent_death_signal(0)  # a request under way completes even if the agent stops
        os.write(taken_w, os.getpid().to_bytes(8, "little"))
        os.close(taken_w)
    except BaseException:
        os._exit(0)
    _worker(server, conn, accepted_at, log_fd)


def _exit_on_signal(signum: int, frame: Any) -> None:
    raise SystemExit(0)


def _worker(server: socket.socket, conn: socket.socket, accepted_at: float, log_fd: int) -> None:
    try:
        server.close()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # subprocess needs to wait for its children
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        handle(conn, accepted_at, log_fd)
    except BaseException as exc:
        _note(f"worker failed: {type(exc).__name__}: {exc}", log_fd)
        if not _running:  # nothing ran yet: the binary may run the request itself
            try:
                conn.sendall(wire.encode_refusal(f"agent worker failed: {type(exc).__name__}: {exc}"))
            except BaseException:
                pass
        # else no reply: the caller dies as a plugin that crashed mid-way would have
    finally:
        os._exit(0)
