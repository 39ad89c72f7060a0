"""Fault injection for tests: die or fail at a named step.

``CNI_FLANNEL_CRASH_AT=<step>`` SIGKILLs the process when it reaches ``step``
(what a node losing power or an OOM kill looks like to the runtime);
``CNI_FLANNEL_FAIL_AT=<step>`` raises a plugin error there instead, so the
rollback path runs; ``CNI_FLANNEL_DELAY_AT=<step>:<seconds>`` sleeps there (a slow
step, for tests that kill the caller mid-way).  Steps are named ``<plugin>.<what-just-happened>``.
"""

from __future__ import annotations

import os
import signal

from .errors import PluginError

INJECTED_FAILURE_CODE = 190


def reached(step: str) -> None:
    if os.environ.get("CNI_FLANNEL_CRASH_AT") == step:
        os.kill(os.getpid(), signal.SIGKILL)
    if os.environ.get("CNI_FLANNEL_FAIL_AT") == step:
        raise PluginError(f"injected failure at {step}", "CNI_FLANNEL_FAIL_AT is set", code=INJECTED_FAILURE_CODE)
    delay = os.environ.get("CNI_FLANNEL_DELAY_AT", "")
    if delay.rpartition(":")[0] == step:
        import time

        time.sleep(float(delay.rpartition(":")[2]))
