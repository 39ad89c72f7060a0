"""The reliability runner cleans up on every exit.

``guard_labs()`` (called once by the runner):

* SIGTERM (a time bound, ``timeout``), SIGHUP and SIGINT (^C) become an exception in the main
  thread, so every ``with Lab()`` unwinds and removes its namespaces; further signals are
  ignored while that teardown runs (a second ^C must not cut it short).
* a guardian process (``python -m tests.reliability.guard PID``, its own session, deaf to those
  signals) waits for the runner to be gone — however it went, SIGKILL included — and then removes
  any lab still owned by it (``/run/<prefix>/owner``, written by the harness's Lab).
"""
from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
from typing import List, Optional

from tests.harness.cleanup import cleanup

SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)


class Stopped(BaseException):
    """A signal asked the runner to stop (BaseException: no `except Exception` swallows it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


_guardian: Optional[subprocess.Popen] = None


def guard_labs() -> None:
    global _guardian

    def stop(signum: int, frame: object) -> None:
        for s in SIGNALS:
            signal.signal(s, signal.SIG_IGN)
        raise Stopped(signum)

    for s in SIGNALS:
        signal.signal(s, stop)
    # its stdin is a pipe only this process holds (Popen closes other fds in children): EOF = gone
    _guardian = subprocess.Popen([sys.executable, "-m", "tests.reliability.guard", str(os.getpid())],
                                 stdin=subprocess.PIPE, start_new_session=True,
                                 cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def owned_labs(pid: int) -> List[str]:
    """Prefixes of the labs whose owner file names `pid`."""
    out = []
    for path in glob.glob("/run/cft*/owner"):
        try:
            with open(path) as f:
                owner = f.read().strip()
        except OSError:
            continue
        if owner == str(pid):
            out.append(os.path.basename(os.path.dirname(path)))
    return out


def main(pid: int) -> int:
    for s in SIGNALS:
        signal.signal(s, signal.SIG_IGN)
    sys.stdin.buffer.read()  # returns when the runner has exited (its end of the pipe closed)
    prefixes = owned_labs(pid)
    for item in cleanup(prefixes) if prefixes else []:
        print(f"reliability guard: runner {pid} gone, removed {item}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1])))
