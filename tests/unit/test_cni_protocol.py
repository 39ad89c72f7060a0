"""The protocol core as data: env, CNI_ARGS, names, versions, config, and the dispatcher."""

from __future__ import annotations

import json
import types
from typing import Any, Dict, List

import pytest

from cni_flannel.cni import skel
from cni_flannel.cni.args import parse_cni_args
from cni_flannel.cni.config import parse_netconf
from cni_flannel.cni.errors import CNIError, InvalidEnvironment
from cni_flannel.cni.names import interface_name_problem
from cni_flannel.cni.request import Request, parse_env
from cni_flannel.cni.result import IPConfig, Result
from cni_flannel.cni.version import SUPPORTED_VERSIONS

CONTAINERD_ARGS = (
    "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;"
    "K8S_POD_INFRA_CONTAINER_ID=0123abcd;K8S_POD_UID=5c1c-4b7e"
)


def env(command: str = "ADD", **over: str) -> Dict[str, str]:
    base = {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": "c1",
        "CNI_NETNS": "/var/run/netns/x",
        "CNI_IFNAME": "eth0",
        "CNI_PATH": "/opt/cni/bin",
    }
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


def conf(version: str = "1.0.0", **extra: Any) -> bytes:
    doc = {"cniVersion": version, "name": "net", "type": "fake"}
    doc.update(extra)
    return json.dumps(doc).encode()


# -- CNI_ARGS -----------------------------------------------------------------


def test_containerd_args_parse() -> None:
    args = parse_cni_args(CONTAINERD_ARGS)
    assert args["K8S_POD_NAME"] == "web-0" and args["IgnoreUnknown"] == "1"


@pytest.mark.parametrize("raw", ["FOO=1;BAR=2", "IgnoreUnknown=1;FOO=1", "FOO=", "A=1;"])
def test_unknown_and_empty_values_are_accepted(raw: str) -> None:
    assert parse_cni_args(raw) == dict(pair.split("=", 1) for pair in raw.split(";") if pair)


@pytest.mark.parametrize("raw", ["FOO", "A=1;B", "=1", "A=1;;=2"])
def test_malformed_pairs_are_rejected(raw: str) -> None:
    with pytest.raises(InvalidEnvironment):
        parse_cni_args(raw)


# -- names --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["eth0", "a", "x" * 15, "net1.100", "\u00e9" * 7])
def test_good_ifnames(name: str) -> None:
    assert interface_name_problem(name) == ""


@pytest.mark.parametrize("name", ["", "x" * 16, ".", "..", "a/b", "a:b", "a b", "a\tb",
                                  "\u00e9" * 8, "a\u00a0", "a\u0120", "a\ud800"])
def test_bad_ifnames(name: str) -> None:
    assert interface_name_problem(name) != ""


@pytest.mark.parametrize("value", ["abc\n", "abc\r", "abc\n-A INPUT -j ACCEPT", "\nabc", "ab c", "../x"])
def test_ids_and_network_names_with_newlines_are_refused(value: str) -> None:
    """A trailing newline passed the old "^...$" pattern (re's "$" matches before it); the ID and
    the name end up in file names, iptables-restore lines and nft -f scripts."""
    from cni_flannel.cni.errors import InvalidConfig, InvalidEnvironment
    from cni_flannel.cni.names import validate_container_id, validate_network_name

    with pytest.raises(InvalidEnvironment):
        validate_container_id(value)
    with pytest.raises(InvalidConfig):
        validate_network_name(value)


# -- env ----------------------------------------------------------------------


@pytest.mark.parametrize("command", ["ADD", "CHECK", "DEL"])
@pytest.mark.parametrize("var", ["CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"])
def test_missing_required_env_is_code_4(command: str, var: str) -> None:
    with pytest.raises(InvalidEnvironment, match=var):
        parse_env(env(command, **{var: None}))


def test_del_does_not_need_a_netns() -> None:
    assert parse_env(env("DEL", CNI_NETNS=None)).netns == ""


def test_nul_in_a_variable_is_code_4() -> None:
    # found by the fuzzer: CNI_NETNS with a NUL reached os.stat and became an internal error
    with pytest.raises(InvalidEnvironment, match="CNI_NETNS"):
        parse_env(env("DEL", CNI_NETNS="/run/netns/a\0b"))


def test_add_needs_a_netns() -> None:
    with pytest.raises(InvalidEnvironment, match="CNI_NETNS"):
        parse_env(env("ADD", CNI_NETNS=None))


@pytest.mark.parametrize("cid", ["../x", "-x", "a/b", "a b", ".x"])
def test_bad_container_ids(cid: str) -> None:
    with pytest.raises(InvalidEnvironment, match="containerID"):
        parse_env(env(CNI_CONTAINERID=cid))


def test_cni_path_is_split() -> None:
    assert parse_env(env(CNI_PATH="/a::/b")).path == ["/a", "/b"]


# -- config -------------------------------------------------------------------


def test_missing_cni_version_means_0_1_0() -> None:
    assert parse_netconf(b'{"name":"n","type":"t"}').cni_version == "0.1.0"


def test_prev_result_is_parsed_in_the_config_version() -> None:
    doc = conf("0.3.1", prevResult={"ips": [{"version": "4", "address": "10.1.0.5/24"}]})
    assert parse_netconf(doc).prev_result.ips == [IPConfig("10.1.0.5/24")]


@pytest.mark.parametrize(
    "data,code",
    [
        (b"", 6),
        (b"{", 6),
        (b"[]", 6),
        (b'{"cniVersion": 1, "name": "n", "type": "t"}', 6),
        (b'{"cniVersion": "9.9.9", "name": "n", "type": "t"}', 1),
        (b'{"cniVersion": "abc", "name": "n", "type": "t"}', 1),
        (b'{"cniVersion": "1.0.0", "type": "t"}', 7),
        (b'{"cniVersion": "1.0.0", "name": "a/b", "type": "t"}', 7),
        (b'{"cniVersion": "1.0.0", "name": "n"}', 7),
        (b'{"cniVersion": "1.0.0", "name": "n", "type": "t", "runtimeConfig": 3}', 6),
        (b'{"cniVersion": "1.0.0", "name": "n", "type": "t", "prevResult": {"ips": [{"address": "x"}]}}', 6),
    ],
)
def test_bad_configs(data: bytes, code: int) -> None:
    with pytest.raises(CNIError) as info:
        parse_netconf(data)
    assert info.value.code == code


def test_gc_attachments_union_of_both_keys() -> None:
    netconf = parse_netconf(
        conf(
            "1.1.0",
            **{
                "cni.dev/valid-attachments": [{"containerID": "a", "ifname": "eth0"}],
                "cni.dev/attachments": [{"containerID": "a", "ifname": "eth0"}, {"containerID": "b", "ifname": "eth1"}],
            },
        )
    )
    req = Request.build(parse_env(env("GC")), b"", netconf)
    assert req.valid_attachments == [("a", "eth0"), ("b", "eth1")]


def test_gc_without_lists_is_none() -> None:
    req = Request.build(parse_env(env("GC")), b"", parse_netconf(conf("1.1.0")))
    assert req.valid_attachments is None


# -- the dispatcher -----------------------------------------------------------


class FakePlugin(types.SimpleNamespace):
    pass


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> List[str]:
    calls: List[str] = []

    def add(req: Request) -> Result:
        calls.append("add")
        return Result(ips=[IPConfig("10.1.0.5/24", "10.1.0.1", None)])

    def boom(req: Request) -> None:
        raise ZeroDivisionError("bug")

    plugin = FakePlugin(
        add=add,
        delete=lambda req: calls.append("del"),
        check=lambda req: calls.append("check"),
        status=lambda req: calls.append("status"),
        gc=boom,
    )
    monkeypatch.setattr(skel, "_load", lambda name: plugin)
    monkeypatch.setattr(skel, "_check_netns", lambda e, environ, enters=True: None)
    monkeypatch.setenv("CNI_FLANNEL_LOG", str(tmp_path / "log"))
    return calls


@pytest.mark.parametrize("asked", list(SUPPORTED_VERSIONS) + ["", "garbage"])
def test_version_never_fails(asked: str) -> None:
    stdin = json.dumps({"cniVersion": asked}).encode() if asked != "garbage" else b"{nope"
    code, out = skel.run("bridge", {"CNI_COMMAND": "VERSION"}, stdin)
    assert code == 0
    assert out["supportedVersions"] == list(SUPPORTED_VERSIONS)


@pytest.mark.parametrize("version", SUPPORTED_VERSIONS)
def test_add_prints_result_in_config_version(fake: List[str], version: str) -> None:
    code, out = skel.run("x", env("ADD"), conf(version))
    assert code == 0 and out["cniVersion"] == version and fake == ["add"]


@pytest.mark.parametrize("command,version", [("CHECK", "0.3.1"), ("STATUS", "1.0.0"), ("GC", "1.0.0")])
def test_commands_refused_below_their_version(fake: List[str], command: str, version: str) -> None:
    code, out = skel.run("x", env(command), conf(version))
    assert code == 1 and out["code"] == 1 and fake == []


@pytest.mark.parametrize("command,version", [("CHECK", "0.4.0"), ("STATUS", "1.1.0"), ("DEL", "0.1.0")])
def test_commands_allowed_at_their_version(fake: List[str], command: str, version: str) -> None:
    code, out = skel.run("x", env(command), conf(version))
    assert (code, out) == (0, None) and len(fake) == 1


def test_plugin_bug_is_internal_error_with_traceback_only_in_log(fake: List[str], tmp_path: Any) -> None:
    code, out = skel.run("x", env("GC"), conf("1.1.0"))
    assert code == 1 and out["code"] == 999 and "ZeroDivisionError" in out["msg"]
    assert "Traceback" in (tmp_path / "log").read_text()


def test_own_netns_is_code_8() -> None:
    code, out = skel.run("loopback", env("ADD", CNI_NETNS="/proc/self/ns/net"), conf())
    assert code == 1 and out["code"] == 8


def netns_recorder(monkeypatch: pytest.MonkeyPatch, enters: bool) -> List[str]:
    """A plugin that records the namespace path it was called with (ENTERS_NETNS as given)."""
    seen: List[str] = []

    def add(req: Request) -> Result:
        seen.append(req.netns)
        return Result(ips=[IPConfig("10.1.0.5/24", "10.1.0.1", None)])

    monkeypatch.setattr(skel, "_load", lambda name: FakePlugin(add=add, ENTERS_NETNS=enters))
    return seen


def test_own_netns_override(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = netns_recorder(monkeypatch, enters=True)
    code, out = skel.run("x", env("ADD", CNI_NETNS="/proc/self/ns/net", CNI_NETNS_OVERRIDE="1"), conf())
    assert code == 0 and seen == ["/proc/self/ns/net"]


@pytest.mark.parametrize("path", ["/nonexistent/ns", "/etc/hostname"])
def test_a_plugin_that_never_enters_the_netns_gets_any_path(monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    """As upstream's skel (pkg/ns CheckNetNS): a path that cannot be opened is the plugin's call."""
    seen = netns_recorder(monkeypatch, enters=False)
    code, out = skel.run("x", env("ADD", CNI_NETNS=path), conf())
    assert code == 0 and seen == [path]


def test_a_plugin_that_never_enters_the_netns_still_refuses_our_own(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = netns_recorder(monkeypatch, enters=False)
    code, out = skel.run("x", env("ADD", CNI_NETNS="/proc/self/ns/net"), conf())
    assert code == 1 and out["code"] == 8 and seen == []


def test_only_host_local_is_lenient() -> None:
    import importlib

    lenient = [name for name, module in skel.PLUGINS.items()
               if not getattr(importlib.import_module(f"cni_flannel.plugins.{module}"), "ENTERS_NETNS", True)]
    assert lenient == ["host-local"]


def test_missing_netns_is_code_4_on_add() -> None:
    code, out = skel.run("loopback", env("ADD", CNI_NETNS="/nonexistent/ns"), conf())
    assert code == 1 and out["code"] == 4 and "/nonexistent/ns" in out["msg"]


def test_not_a_netns_file_is_code_4() -> None:
    code, out = skel.run("loopback", env("ADD", CNI_NETNS="/etc/hostname"), conf())
    assert code == 1 and out["code"] == 4 and "not a network namespace" in out["msg"]
