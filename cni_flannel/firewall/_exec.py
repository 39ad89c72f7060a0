"""Running iptables/nft: clean environment, and the one place their failures
become CNI errors (TryAgainLater when another writer holds the lock, else
InternalError carrying the command's stderr)."""

from __future__ import annotations

import os
import subprocess
import threading
from typing import Dict, List, Optional, Sequence

from cni_flannel.cni.errors import InternalError, TryAgainLater
from cni_flannel.cni.procenv import clean_env

# A runtime may exec us with a minimal PATH; the tools live in sbin.
_SBIN_PATH = "/usr/local/sbin:/usr/sbin:/sbin:/usr/local/bin:/usr/bin:/bin"
_BUSY = ("xtables lock", "Resource temporarily unavailable", "Device or resource busy")
TIMEOUT = 60.0


def child_env() -> Dict[str, str]:
    env = clean_env()
    env["PATH"] = env["PATH"] + ":" + _SBIN_PATH if env.get("PATH") else _SBIN_PATH
    env["LC_ALL"] = "C"  # we parse their output and messages
    return env


class Runner:
    """Executes one command; ``prefix`` wraps it (tests: ``ip netns exec <ns>``)."""

    def __init__(self, prefix: Sequence[str] = ()) -> None:
        self.prefix = tuple(prefix)
        self.calls = 0  # commands executed, for tests and measurements

    @classmethod
    def in_netns(cls, name: str) -> "Runner":
        return cls(("ip", "netns", "exec", name))

    def run(self, argv: Sequence[str], stdin: str = "", check: bool = True) -> subprocess.CompletedProcess:
        """Run argv with stdin; raise a CNI error on failure when check."""
        self.calls += 1
        full: List[str] = [*self.prefix, *argv]
        env = child_env()
        try:
            # posix_spawn (vfork) instead of fork: an absolute executable, close_fds=False (our
            # descriptors are all close-on-exec, PEP 446) and no cwd= let subprocess use it.  A fork
            # of a big process (an agent worker) copies its page tables: 10-20 ms per exec measured.
            proc = _spawn_and_wait(full, _which(full[0], env["PATH"]), stdin.encode(), env,
                                   None if _cwd_is_root() else "/")
        except FileNotFoundError:
            raise InternalError(f"{full[0]} not found; install iptables/nftables on the node",
                                details=f"PATH={child_env()['PATH']}") from None
        except subprocess.TimeoutExpired:
            raise TryAgainLater(f"{' '.join(argv[:2])} did not finish within {TIMEOUT:.0f}s") from None
        done = subprocess.CompletedProcess(full, proc.returncode, proc.stdout.decode(errors="replace"),
                                           proc.stderr.decode(errors="replace"))
        if check and done.returncode != 0:
            raise command_error(argv, done.returncode, done.stderr, stdin)
        return done


def _spawn_and_wait(argv: List[str], executable: str, data: bytes, env: Dict[str, str],
                    cwd: Optional[str]) -> subprocess.CompletedProcess:
    """subprocess.run(..., timeout=TIMEOUT) without its polling: with a timeout, run() waits for
    the exit in a sleep loop (1, 2, 4 ms...), which cost 1-3 ms per command after its output had
    ended.  Here the wait blocks in waitpid and a timer kills a command that overstays."""
    proc = subprocess.Popen(argv, executable=executable, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, close_fds=False, cwd=cwd)
    expired = threading.Event()

    def overstayed() -> None:
        expired.set()
        proc.kill()

    timer = threading.Timer(TIMEOUT, overstayed)
    timer.daemon = True
    timer.start()
    try:
        out, err = proc.communicate(data)
    finally:
        timer.cancel()
        timer.join()  # (an agent worker going home must be single-threaded)
    if expired.is_set():
        raise subprocess.TimeoutExpired(argv, TIMEOUT)
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


_found: Dict[str, str] = {}


def forget() -> None:
    """Drop the tool paths found so far (a resident worker's next caller may see other files)."""
    _found.clear()


def _cwd_is_root() -> bool:
    try:
        return os.getcwd() == "/"
    except OSError:  # a removed working directory
        return False


def _which(name: str, path: str) -> str:
    """The absolute path of a tool (cached); raises FileNotFoundError as exec would."""
    if "/" in name:
        return name
    key = name + "\0" + path
    if key not in _found:
        for directory in path.split(":"):
            candidate = os.path.join(directory or ".", name)
            if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
                _found[key] = candidate
                break
        else:
            raise FileNotFoundError(name)
    return _found[key]


def command_error(argv: Sequence[str], rc: int, stderr: str, stdin: str = "") -> Exception:
    msg = f"{' '.join(argv)} failed (exit {rc}): {stderr.strip() or 'no message'}"
    details = f"input:\n{stdin}" if stdin else ""
    if any(s in stderr for s in _BUSY):
        return TryAgainLater(msg, details=details)
    return InternalError(msg, details=details)
