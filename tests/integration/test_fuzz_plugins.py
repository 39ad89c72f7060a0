"""Fuzzing every plugin's stdin and CNI_* environment inside a test node (tests/fuzz/plugins.py):
a result or a clean CNI error, never a traceback; a failing input changes nothing on the node;
a successful ADD is undone by its DEL.  In-process through the dispatcher (CNI_FUZZ_EXAMPLES
cases per plugin) and through the frozen binaries (CNI_FUZZ_EXEC_EXAMPLES)."""
from __future__ import annotations

import json
import os

import pytest

from tests.fuzz.settings import EXAMPLES, report
from tests.harness.plugins import PLUGIN_NAMES, REPO_ROOT
from tests.integration.flannel_node import SUBNET_ENV

EXEC_EXAMPLES = int(os.environ.get("CNI_FUZZ_EXEC_EXAMPLES", "5"))
PYTHON = str(REPO_ROOT / ".venv" / "bin" / "python")


@pytest.mark.parametrize("mode", ["in-process", "exec"])
@pytest.mark.parametrize("plugin", PLUGIN_NAMES)
def test_fuzz_plugin(node, pod, plugin: str, mode: str) -> None:
    node.write_file("/run/flannel/subnet.env", SUBNET_ENV)
    examples = EXAMPLES if mode == "in-process" else EXEC_EXAMPLES
    argv = [PYTHON, "-m", "tests.fuzz.plugins", "--plugin", plugin, "--netns", pod().path,
            "--examples", str(examples)] + (["--exec"] if mode == "exec" else [])
    done = node.run(argv, env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)), check=False, timeout=3600)
    assert done.stdout.strip(), done.stderr[-3000:]
    counts = json.loads(done.stdout.strip().splitlines()[-1])
    report(f"plugin:{counts.pop('target')}", {k: counts.get(k, 0) for k in ("cases", "ok", "errors", "tracebacks",
                                                                           "changed", "leaks")})
    assert counts["error"] is None and done.returncode == 0, counts["first_failure"] or counts["error"]
    assert counts["cases"] >= examples * 0.9 and counts.get("ok") and counts.get("errors"), counts
