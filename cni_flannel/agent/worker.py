"""One agent worker: waits in accept(), serves callers one after another, then exits.

A worker joins the caller's network and mount namespaces (descriptors sent with the
request), takes the caller's environment and stdin, and runs the same dispatcher
(``skel.run``) the binary would have run — so results, on-disk state and errors are the
same either way; only the start-up cost moves.

A worker forked from the agent shares its memory copy-on-write: its first request pays
for copying every page it writes (Python's reference counts write to every object it
touches) — measured, page faults and fork were most of the agent's CPU per request.  So
a worker that finished a request cleanly goes home (the agent's own namespaces,
environment, working directory) and waits for the next caller: no fork, no copy for
that one.  It exits instead when anything of the request is left over (a thread, a
descriptor, a namespace it cannot leave), after MAX_REQUESTS, or when MAX_IDLE workers
wait already.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from .. import __version__
from ..cni import wire
from .notes import note

CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000

#: Requests one worker serves before it exits (bounds whatever a request might leak).
MAX_REQUESTS = 100
#: A worker done with a request exits when this many workers wait idle already.
MAX_IDLE = 8
#: Seconds a caller has to send its request once connected (a stuck caller must not pin a worker).
REQUEST_TIMEOUT = 30.0

#: What a worker tells the agent on the pool pipe, or'ed into its pid (8 bytes, little endian).
TAKEN, BACK = 0, 1 << 62


class Refusal(Exception):
    """The request is not served: the caller runs it itself."""


class Home:
    """What a worker returns to after a request: the agent's namespaces, environment, umask and
    descriptors; and the agent's count of idle workers (shared memory the agent writes)."""

    def __init__(self, idle_count: Any) -> None:
        self.net = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        self.mnt = os.open("/proc/self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
        self.environ = dict(os.environ)
        self.umask = os.umask(0o022)
        os.umask(self.umask)
        self.idle_count = idle_count
        self.fds: List[str] = []  # a worker's own descriptors while idle (set when it starts)

    def idle_workers(self) -> int:
        return struct.unpack_from("=q", self.idle_count)[0]

    def go_back(self) -> bool:
        """Leave the caller's namespaces and state; False when this worker should not serve again."""
        import threading

        if threading.active_count() != 1:  # setns(CLONE_NEWNS) needs a single thread, too
            return False
        try:
            if not _same_namespace(self.mnt, "mnt"):
                _setns(self.mnt, CLONE_NEWNS)
            if not _same_namespace(self.net, "net"):
                _setns(self.net, CLONE_NEWNET)
            os.chdir("/")
        except OSError:
            return False
        os.environ.clear()
        os.environ.update(self.environ)
        if os.umask(self.umask) != self.umask:
            return False
        _forget_request_state()
        return _own_fds() == self.fds


def _forget_request_state() -> None:
    """Per-process caches that belong to one caller (its mount namespace: log file, tool paths)."""
    from ..cni import log
    from ..firewall import _exec

    log.forget()
    _exec.forget()


def _own_fds() -> List[str]:
    return sorted(os.listdir("/proc/self/fd"))


def _setns(fd: int, kind: int) -> None:
    import ctypes

    from ..net.ns import libc

    if libc().setns(fd, kind) != 0:  # the kind makes the kernel check the descriptor's type
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


def handle(conn: socket.socket, accepted_at: float = 0.0, log_fd: int = -1) -> bool:
    """Serve one request in this worker; True when it was run (not refused)."""
    global _running
    _running = False
    try:
        plugin, env, stdin = _receive(conn)
    except Refusal as why:
        note(f"refused: {why}", log_fd)
        conn.sendall(wire.encode_refusal(str(why)))
        return False
    _running = True  # from here on a failure must not make the caller run it a second time
    watch = CallerWatch(conn, lambda: note(f"{plugin} {env.get('CNI_COMMAND', '?')} "
                                           f"{env.get('CNI_CONTAINERID', '-')} killed: the caller hung up", log_fd))
    try:
        os.environ.clear()
        os.environ.update(env)
        from ..cni import skel

        started = time.monotonic()
        if profile_dir:
            code, text = _profiled(plugin, env, stdin)
        else:
            code, text = skel.render(*skel.run(plugin, os.environ, stdin))
        reply = wire.encode_result(code, text.encode() if text is not None else b"")
        done = time.monotonic()
        # logged before answering: once the caller has its answer, the line is there to read
        note(f"{plugin} {env.get('CNI_COMMAND', '?')} {env.get('CNI_CONTAINERID', '-')} exit {code} "
             f"({(started - accepted_at) * 1000:.1f} ms to start, {(done - started) * 1000:.1f} ms to run)", log_fd)
    finally:
        watch.stop()  # the work is done: a caller leaving now costs nothing
    conn.sendall(reply)
    return True


class CallerWatch:
    """SIGKILL this worker as soon as its caller is gone, until stop().

    A runtime that times out kills the plugin (the hand-off client) and runs DEL; a worker that
    went on would finish its ADD after that DEL and leave state behind (an IP file, chains).
    Killing it here is what killing an exec'd plugin does.  Only POLLHUP/POLLERR count: a closed
    unix stream peer gives POLLHUP, while a caller that merely shut its write side after sending
    gives POLLRDHUP alone (our clients do not, but that caller still waits for the answer).
    stop() wakes the watching thread and waits for it: a worker going home must be single-threaded."""

    def __init__(self, conn: socket.socket, on_hangup: Callable[[], None]) -> None:
        import select
        import threading

        self._stopped = threading.Event()
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC)
        poller = select.poll()
        poller.register(conn.fileno(), select.POLLHUP | select.POLLERR)
        poller.register(self._wake_r, select.POLLIN)

        def watch() -> None:
            while not self._stopped.is_set():
                events = poller.poll()
                if self._stopped.is_set():
                    return
                if any(fd == conn.fileno() for fd, _ in events):
                    on_hangup()
                    os.kill(os.getpid(), signal.SIGKILL)

        self._thread = threading.Thread(target=watch, name="caller-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        os.write(self._wake_w, b"x")
        self._thread.join()
        os.close(self._wake_r)
        os.close(self._wake_w)


#: --profile-dir: each worker's plugin run under cProfile, saved there (bench/chain/agent_profile.py)
profile_dir = ""


def _profiled(plugin: str, env: Dict[str, str], stdin: bytes) -> Tuple[int, Optional[str]]:
    import cProfile

    from ..cni import skel

    prof = cProfile.Profile()
    out = prof.runcall(lambda: skel.render(*skel.run(plugin, os.environ, stdin)))
    prof.dump_stats(os.path.join(profile_dir, f"{plugin}-{env.get('CNI_COMMAND', '?')}-{os.getpid()}"
                                 f"-{time.monotonic_ns()}.prof"))
    return out


def set_parent_death_signal(sig: int) -> None:
    from ..net.ns import libc

    try:
        libc().prctl(1, sig, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def run(server: socket.socket, pool_w: int, log_fd: int, home: Home) -> None:
    """A freshly forked worker: serve callers until there is a reason to stop; never returns."""
    agent = os.getppid()
    served = 0
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # subprocess needs to wait for its children
        home.fds = _own_fds()
        while True:
            conn, accepted_at = _await_caller(server, pool_w, log_fd, agent)
            try:
                clean = _serve(conn, accepted_at, log_fd)
            finally:
                conn.close()
            served += 1
            if not clean or served >= MAX_REQUESTS or home.idle_workers() >= MAX_IDLE or not home.go_back():
                break
            os.write(pool_w, (os.getpid() | BACK).to_bytes(8, "little"))
    except BaseException:
        pass
    os._exit(0)


def _await_caller(server: socket.socket, pool_w: int, log_fd: int, agent: int) -> Tuple[socket.socket, float]:
    set_parent_death_signal(signal.SIGKILL)  # an idle worker must not outlive the agent
    if os.getppid() != agent:
        os._exit(0)
    while True:
        try:
            conn, _ = server.accept()
            break
        except InterruptedError:
            continue
        except OSError as exc:  # EMFILE, ECONNABORTED...: log, breathe, go on
            note(f"accept failed: {exc}", log_fd)
            time.sleep(0.05)
    accepted_at = time.monotonic()
    set_parent_death_signal(0)  # a request under way completes even if the agent stops
    os.write(pool_w, (os.getpid() | TAKEN).to_bytes(8, "little"))
    return conn, accepted_at


def _serve(conn: socket.socket, accepted_at: float, log_fd: int) -> bool:
    """One request; True when this worker may serve another."""
    try:
        return handle(conn, accepted_at, log_fd)
    except BaseException as exc:
        note(f"worker failed: {type(exc).__name__}: {exc}", log_fd)
        if not _running:  # nothing ran yet: the binary may run the request itself
            try:
                conn.sendall(wire.encode_refusal(f"agent worker failed: {type(exc).__name__}: {exc}"))
            except BaseException:
                pass
        # else no reply: the caller dies as a plugin that crashed mid-way would have
        return False
