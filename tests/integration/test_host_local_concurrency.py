"""100 host-local processes at once: the flock makes them take turns.

Runs whatever plugin_dir() gives (frozen binaries by default, source wrappers
with CNI_TEST_FROM_SOURCE=1); a second test mixes ours with the Go reference
on the same directory, which only works if both honour the same lock file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List

from tests.integration.test_host_local_common import (  # noqa: F401  (fixtures)
    NETWORK, go, net_config, netns, ours, spawn, state,
)

N = 100
RANGES = [[{"subnet": "10.7.0.0/24"}]]
TIMEOUT = 300


def run_all(plugins: List[str], command: str, conf: Dict, netns: str) -> List[Dict]:  # noqa: F811
    procs = [spawn(plugins[i % len(plugins)], command, conf, netns, cid=f"pod{i:03d}") for i in range(N)]
    outs = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=TIMEOUT)
        assert proc.returncode == 0, (stdout, stderr)
        outs.append(json.loads(stdout) if stdout.strip() else {})
    return outs


def check_parallel_add_then_del(plugins: List[str], data_dir: Path, netns: str) -> None:  # noqa: F811
    conf = net_config(data_dir, RANGES)
    results = run_all(plugins, "ADD", conf, netns)
    got = [r["ips"][0]["address"] for r in results]
    assert len(set(got)) == N, sorted(got)
    files = state(data_dir)
    addr_files = {k: v for k, v in files.items() if k.startswith("10.7.0.")}
    assert len(addr_files) == N
    for i, address in enumerate(got):
        assert addr_files[address.split("/")[0]] == f"pod{i:03d}\r\neth0".encode()
    assert "10.7.0.1" not in addr_files  # the gateway

    run_all(plugins, "DEL", conf, netns)
    assert sorted(state(data_dir)) == ["last_reserved_ip.0", "lock"]


def test_100_parallel_adds_and_dels(tmp_path: Path, ours: str, netns: str) -> None:  # noqa: F811
    check_parallel_add_then_del([ours], tmp_path, netns)


def test_100_parallel_mixed_with_go(tmp_path: Path, ours: str, go: str, netns: str) -> None:  # noqa: F811
    check_parallel_add_then_del([ours, go], tmp_path, netns)
