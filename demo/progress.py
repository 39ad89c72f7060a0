"""What the demo prints: named steps with their times, commands before their output, checks.

The transcript format is read back by demo/transcript.py (and so by the tests):

    [  3.2s] start etcd ...
    [  3.9s] done start etcd (0.7 s)
    [node1]$ ip -d link show flannel.1
        5: flannel.1: <BROADCAST,...
    check ok: vxlan id 1 on node1
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
from typing import Iterator, List, Optional, TextIO, Tuple

# Test hook: DEMO_FAIL_AT=<text> makes the first step whose name contains <text> fail, so the
# tests can watch everything be removed after a failure midway.
FAIL_AT_ENV = "DEMO_FAIL_AT"


class DemoError(Exception):
    """Something the demo shows did not happen (no packet where one must be, a daemon died...)."""


class Progress:
    def __init__(self, stream: Optional[TextIO] = None) -> None:
        self.stream = stream or sys.stdout
        self.started = time.monotonic()
        self.steps: List[Tuple[str, float]] = []
        codes = ("\033[1m", "\033[2m", "\033[32m", "\033[31m", "\033[33m", "\033[0m")
        self.bold, self.dim, self.green, self.red, self.yellow, self.end = (
            codes if self.stream.isatty() else ("",) * 6)

    def say(self, text: str = "") -> None:
        print(text, file=self.stream, flush=True)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def section(self, title: str) -> None:
        self.say(f"\n{self.bold}== {title}{self.end}")

    def note(self, text: str) -> None:
        self.say(f"   {text}")

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        began = time.monotonic()
        self.say(f"{self.dim}[{self.elapsed():6.1f}s]{self.end} {name} ...")
        try:
            fail_at = os.environ.get(FAIL_AT_ENV)
            if fail_at and fail_at in name:
                raise DemoError(f"{FAIL_AT_ENV}={fail_at}: failing step {name!r} on purpose")
            yield
        except BaseException:
            self.say(f"{self.red}[{self.elapsed():6.1f}s] FAILED {name} "
                     f"(after {time.monotonic() - began:.1f} s){self.end}")
            raise
        took = time.monotonic() - began
        self.steps.append((name, took))
        self.say(f"{self.dim}[{self.elapsed():6.1f}s]{self.end} {self.green}done{self.end} {name} ({took:.1f} s)")

    def command(self, where: str, cmd: str, output: str) -> None:
        """A command as typed on `where` (a node, a pod, etcd), then its output indented."""
        self.say(f"{self.dim}[{where}]${self.end} {cmd}")
        for line in output.rstrip("\n").splitlines():
            self.say(f"    {line}")

    def check(self, ok: bool, text: str) -> None:
        """A fact the demo verified; a false one raises after being printed."""
        if ok:
            self.say(f"{self.green}check ok:{self.end} {text}")
        else:
            self.say(f"{self.red}check FAILED:{self.end} {text}")
            raise DemoError(text)

    def unavailable(self, what: str, why: str) -> None:
        self.say(f"{self.yellow}unavailable:{self.end} {what}: {why}")
