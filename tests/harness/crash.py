"""The crash-point hook: a plugin run with CNI_FLANNEL_CRASH_AT=<step> SIGKILLs
itself when it reaches <step> (cni_flannel.cni.crashpoint.reached)."""
from __future__ import annotations

from typing import Dict, Mapping, Optional

from tests.harness.exec import PluginRun, run_plugin

CRASH_ENV = "CNI_FLANNEL_CRASH_AT"


def crash_env(step: str, env: Optional[Mapping[str, Optional[str]]] = None) -> Dict[str, Optional[str]]:
    """env (an env_extra mapping) plus the variable that arms the crash point."""
    return {**(env or {}), CRASH_ENV: step}


def run_until_crash(plugin: str, command: str, config, step: str, **kwargs) -> PluginRun:
    """run_plugin with the crash point armed; fail unless the plugin died at it."""
    result = run_plugin(plugin, command, config,
                        env_extra=crash_env(step, kwargs.pop("env_extra", None)), **kwargs)
    if not result.killed:
        raise AssertionError(f"{plugin} {command} did not crash at {step!r}: rc={result.rc}\n"
                             f"stdout: {result.stdout}\nstderr: {result.stderr}")
    return result
