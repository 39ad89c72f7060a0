"""`make reliability`'s runner leaves no lab behind however it ends: a time bound's SIGTERM, ^C
(SIGINT) and SIGHUP unwind its labs in the runner itself; after a SIGKILL its guardian process
removes them (tests/reliability/guard.py)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.harness.netns import netns_names
from tests.harness.plugins import REPO_ROOT
from tests.reliability.guard import owned_labs


def start_runner() -> subprocess.Popen:
    """A crash-injection run far too long to finish, 2 pods a round."""
    return subprocess.Popen([sys.executable, "-m", "tests.reliability.run", "--part", "crashes", "--path",
                             "self-contained", "--self-contained-share", "1", "--crashes", "1000000", "--pods", "2"],
                            cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def lab_in_a_round(pid: int) -> str:
    """The runner's lab prefix, once a round's pod namespaces exist (fails after 120 s)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for prefix in owned_labs(pid):
            names = [n for n in netns_names() if n.startswith(prefix + "-")]
            if any("-r" in n[len(prefix):] for n in names) and any(n.endswith("-keep") for n in names):
                return prefix
        time.sleep(0.2)
    raise AssertionError(f"runner {pid} made no lab with a round in 120 s")


def left(prefix: str) -> list:
    return [n for n in netns_names() if n.startswith(prefix)] + (
        [f"/run/{prefix}"] if os.path.exists(f"/run/{prefix}") else [])


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL],
                         ids=lambda s: signal.Signals(s).name)
def test_runner_removes_its_lab_on_every_exit(signum: int) -> None:
    proc = start_runner()
    try:
        prefix = lab_in_a_round(proc.pid)
        os.kill(proc.pid, signum)
        # stderr closes when the runner and its guardian have both exited
        _, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert left(prefix) == [], err[-2000:]
    if signum == signal.SIGKILL:  # nobody but the guardian could have removed it
        assert proc.returncode == -signal.SIGKILL
        assert f"reliability guard: runner {proc.pid} gone, removed netns {prefix}-n1" in err, err[-2000:]
    else:  # the runner itself unwound its lab: the guardian found nothing to do
        assert proc.returncode == 128 + signum, err[-2000:]
        assert f"stopped by {signal.Signals(signum).name}; labs removed" in err, err[-2000:]
        assert "reliability guard:" not in err, err[-2000:]
