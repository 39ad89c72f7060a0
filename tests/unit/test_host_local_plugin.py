"""The host-local plugin through the dispatcher, in-process (no exec, no root)."""

from __future__ import annotations

import json
from typing import Any, Dict, Optional

import pytest

from cni_flannel.cni import skel


def config(tmp_path, version="1.0.0", **ipam: Any) -> Dict[str, Any]:
    section = {"type": "host-local", "dataDir": str(tmp_path), "ranges": [[{"subnet": "10.1.2.0/24"}], [{"subnet": "fd00::/64"}]]}
    section.update(ipam)
    return {"cniVersion": version, "name": "net", "type": "bridge", "ipam": section}


def call(command: str, conf: Dict[str, Any], cid: str = "c1", ifname: str = "eth0", args: str = "",
         extra: Optional[Dict[str, Any]] = None):
    env = {"CNI_COMMAND": command, "CNI_CONTAINERID": cid, "CNI_IFNAME": ifname, "CNI_PATH": "/nonexistent",
           "CNI_NETNS": "/proc/self/ns/net", "CNI_NETNS_OVERRIDE": "1", "CNI_ARGS": args,
           "CNI_FLANNEL_LOG": "/dev/null"}
    doc = dict(conf, **(extra or {}))
    return skel.run("host-local", env, json.dumps(doc).encode())


def test_add_del_cycle(tmp_path):
    rc, out = call("ADD", config(tmp_path))
    assert rc == 0
    assert out == {"cniVersion": "1.0.0", "ips": [{"address": "10.1.2.2/24", "gateway": "10.1.2.1"},
                                                  {"address": "fd00::2/64", "gateway": "fd00::1"}], "dns": {}}
    assert call("CHECK", config(tmp_path)) == (0, None)
    assert call("DEL", config(tmp_path)) == (0, None)
    assert call("DEL", config(tmp_path)) == (0, None)  # again: still fine
    rc, out = call("CHECK", config(tmp_path))
    assert rc == 1 and out["code"] == 3 and "Failed to find address added by container c1" in out["msg"]


def test_result_versions(tmp_path):
    rc, out = call("ADD", config(tmp_path, "0.2.0"))
    assert out == {"cniVersion": "0.2.0", "ip4": {"ip": "10.1.2.2/24", "gateway": "10.1.2.1"},
                   "ip6": {"ip": "fd00::2/64", "gateway": "fd00::1"}, "dns": {}}
    rc, out = call("ADD", config(tmp_path, "0.4.0"), cid="c2")
    assert [ip["version"] for ip in out["ips"]] == ["4", "6"]


def test_cni_args_ip_comma_separated(tmp_path):
    rc, out = call("ADD", config(tmp_path), args="IgnoreUnknown=1;K8S_POD_NAME=x;IP=10.1.2.50,fd00::50")
    assert rc == 0, out
    assert [ip["address"] for ip in out["ips"]] == ["10.1.2.50/24", "fd00::50/64"]


def test_runtime_config_ip_ranges_prepended(tmp_path):
    conf = config(tmp_path, ranges=[[{"subnet": "10.1.2.0/24"}]])
    rc, out = call("ADD", conf, extra={"runtimeConfig": {"ipRanges": [[{"subnet": "fd00:1::/64"}]]}})
    assert [ip["address"] for ip in out["ips"]] == ["fd00:1::2/64", "10.1.2.2/24"]


def test_missing_ipam_section(tmp_path):
    conf = config(tmp_path)
    del conf["ipam"]
    rc, out = call("ADD", conf)
    assert rc == 1 and out["code"] == 7 and "ipam" in out["msg"]


def test_gc_and_status_on_110(tmp_path):
    for cid in ("keep", "gone"):
        assert call("ADD", config(tmp_path, "1.1.0"), cid=cid)[0] == 0
    attach = [{"containerID": "keep", "ifname": "eth0"}]
    assert call("GC", config(tmp_path, "1.1.0"), extra={"cni.dev/valid-attachments": attach}) == (0, None)
    assert sorted(p.name for p in (tmp_path / "net").iterdir() if p.name[0] in "1f") == ["10.1.2.2", "fd00::2"]
    assert call("STATUS", config(tmp_path, "1.1.0")) == (0, None)


def test_gc_legacy_attachments_key(tmp_path):
    call("ADD", config(tmp_path, "1.1.0"), cid="keep")
    call("ADD", config(tmp_path, "1.1.0"), cid="gone")
    call("GC", config(tmp_path, "1.1.0"), extra={"cni.dev/attachments": [{"containerID": "keep", "ifname": "eth0"}]})
    assert not (tmp_path / "net" / "10.1.2.3").exists() and (tmp_path / "net" / "10.1.2.2").exists()


def test_del_with_broken_ranges_still_releases(tmp_path):
    call("ADD", config(tmp_path))
    assert call("DEL", config(tmp_path, ranges=[[{"subnet": "nonsense"}]])) == (0, None)
    assert not (tmp_path / "net" / "10.1.2.2").exists()


def test_exhaustion_error_json(tmp_path):
    conf = config(tmp_path, ranges=[[{"subnet": "10.1.2.0/30"}]])
    call("ADD", conf, cid="a")
    rc, out = call("ADD", conf, cid="b")
    assert rc == 1 and out["code"] == 110
    assert out["msg"].startswith("no IP addresses available in range set: 10.1.2.1-10.1.2.2")


@pytest.mark.parametrize("version", ["0.3.1", "1.0.0"])
def test_status_refused_before_110(tmp_path, version):
    rc, out = call("STATUS", config(tmp_path, version))
    assert rc == 1 and out["code"] == 1
