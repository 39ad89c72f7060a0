"""Differential test against Debian's Go host-local (/usr/lib/cni/host-local, spec <= 1.0.0).

The same ADD/DEL sequence runs three times on the same config, each in its own
dataDir: Go only, ours only, and alternating between the two.  After every
step the addresses handed out and the directory contents (every file name and
byte; modes differ by version) must be identical — so each implementation
reads, allocates next to and releases what the other wrote.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest

from tests.integration.test_host_local_common import (  # noqa: F401  (fixtures)
    NETWORK, addresses, call, go, net_config, netns, ours, state,
)

# v4 set first and small (exhaustion and wrap happen there); v6 second.
RANGES = [[{"subnet": "10.1.2.0/29"}], [{"subnet": "fd00:1::/64", "rangeStart": "fd00:1::10"}]]

# (command, container, ifname, CNI_ARGS)
SEQUENCE: List[Tuple[str, str, str, Optional[str]]] = [
    ("ADD", "c1", "eth0", None),
    ("ADD", "c2", "eth0", None),
    ("ADD", "c2", "net1", None),  # second interface of one container
    ("ADD", "c3", "eth0", "IgnoreUnknown=1;K8S_POD_NAME=web;IP=10.1.2.6"),
    ("DEL", "c1", "eth0", None),
    ("ADD", "c4", "eth0", None),  # round robin continues after .6: wraps to .2 (freed)
    ("ADD", "c5", "eth0", None),  # v4 set now full
    ("ADD", "c6", "eth0", None),  # exhaustion: both fail, nothing changes
    ("DEL", "c2", "net1", None),
    ("DEL", "c2", "net1", None),  # again: nothing held, success
    ("ADD", "c6", "eth0", None),
    ("ADD", "c6", "eth0", None),  # duplicate: both fail
    ("DEL", "c3", "eth0", None),
    ("DEL", "nobody", "eth0", None),
    ("ADD", "c7", "eth0", "IP=fd00:1::99"),
]


def step(plugin: str, data_dir: Path, netns: str, command: str, cid: str, ifname: str,
         cni_args: Optional[str]) -> Tuple[int, List[str], str]:
    done = call(plugin, command, net_config(data_dir, RANGES), netns, cid=cid, ifname=ifname, cni_args=cni_args)
    if done.rc != 0:
        assert isinstance(done.json, dict), (done.stdout, done.stderr)
        return done.rc, [], done.json["msg"]
    return 0, addresses(done) if command == "ADD" else [], ""


def test_same_sequence_same_addresses_same_files(tmp_path: Path, ours: str, go: str, netns: str) -> None:  # noqa: F811
    dirs: Dict[str, Path] = {k: tmp_path / k for k in ("go", "ours", "mixed")}
    for i, (command, cid, ifname, args) in enumerate(SEQUENCE):
        outcome = {
            "go": step(go, dirs["go"], netns, command, cid, ifname, args),
            "ours": step(ours, dirs["ours"], netns, command, cid, ifname, args),
            "mixed": step(go if i % 2 else ours, dirs["mixed"], netns, command, cid, ifname, args),
        }
        where = f"step {i}: {command} {cid}/{ifname} {args or ''}"
        rcs = {k: v[0] for k, v in outcome.items()}
        assert len(set(rcs.values())) == 1, (where, outcome)
        assert outcome["go"][1] == outcome["ours"][1] == outcome["mixed"][1], (where, outcome)
        if rcs["go"]:
            # Same failure, told the same way (the Go plugin prefixes "failed to allocate for range N: ").
            for key in ("no IP addresses available in range set", "duplicate allocation is not allowed"):
                if key in outcome["go"][2]:
                    assert key in outcome["ours"][2], (where, outcome)
        files = {k: state(d) for k, d in dirs.items()}
        assert files["go"] == files["ours"] == files["mixed"], (where, files)
    assert state(dirs["go"]) == {  # worked out by hand from the reference's rules
        "10.1.2.2": b"c4\r\neth0", "10.1.2.3": b"c2\r\neth0", "10.1.2.4": b"c6\r\neth0", "10.1.2.5": b"c5\r\neth0",
        "10.1.2.6": b"c7\r\neth0", "fd00:1::11": b"c2\r\neth0", "fd00:1::14": b"c4\r\neth0",
        "fd00:1::15": b"c5\r\neth0", "fd00:1::16": b"c6\r\neth0", "fd00:1::99": b"c7\r\neth0",
        "last_reserved_ip.0": b"10.1.2.6", "last_reserved_ip.1": b"fd00:1::99", "lock": b"",
    }


@pytest.mark.parametrize("first,second", [("go", "ours"), ("ours", "go")])
def test_each_deletes_what_the_other_allocated(tmp_path: Path, ours: str, go: str, netns: str,
                                               first: str, second: str) -> None:  # noqa: F811
    plugins = {"go": go, "ours": ours}
    conf = net_config(tmp_path, RANGES)
    for cid in ("a", "b", "c"):
        assert call(plugins[first], "ADD", conf, netns, cid=cid).rc == 0
    assert call(plugins[second], "CHECK", conf, netns, cid="b").rc == 0
    assert call(plugins[second], "DEL", conf, netns, cid="b").rc == 0
    assert call(plugins[second], "CHECK", conf, netns, cid="b").rc == 1
    left = state(tmp_path)
    assert sorted(n for n in left if n[0].isdigit() or ":" in n) == ["10.1.2.2", "10.1.2.4", "fd00:1::10", "fd00:1::12"]
    for cid in ("a", "c"):
        assert call(plugins[second], "DEL", conf, netns, cid=cid).rc == 0
    assert sorted(state(tmp_path)) == ["last_reserved_ip.0", "last_reserved_ip.1", "lock"]


def test_legacy_id_only_file_released_by_both(tmp_path: Path, ours: str, go: str, netns: str) -> None:  # noqa: F811
    conf = net_config(tmp_path, RANGES)
    for plugin in (go, ours):
        d = tmp_path / NETWORK
        d.mkdir(exist_ok=True)
        (d / "10.1.2.5").write_bytes(b"oldcid")
        assert call(plugin, "CHECK", conf, netns, cid="oldcid").rc == 0
        assert call(plugin, "DEL", conf, netns, cid="oldcid").rc == 0
        assert not (d / "10.1.2.5").exists()
