"""flannel's pure parts: subnet.env parsing and the delegate config, compared to the reference's output."""

from __future__ import annotations

import json
import os
import stat
from typing import Any, Dict

import pytest

from cni_flannel.cni.errors import CNIError, InvalidConfig, TryAgainLater
from cni_flannel.flannel import delegate_conf, saved_conf, subnet_env

V4 = "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.17.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=true\n"
V6 = "FLANNEL_IPV6_NETWORK=fd00:1::/56\nFLANNEL_IPV6_SUBNET=fd00:1:0:11::1/64\nFLANNEL_MTU=1452\nFLANNEL_IPMASQ=false\n"
DUAL = (
    "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\n"
    "FLANNEL_IPV6_NETWORK=fd00:10:244::/56\nFLANNEL_IPV6_SUBNET=fd00:10:244:3::1/64\n"
    "FLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"
)


def build(env_text: str, **conf: Any) -> Dict[str, Any]:
    flannel = {"name": "cni-flannel", "type": "flannel"}
    flannel.update(conf)
    return delegate_conf.build(flannel, subnet_env.parse(env_text))


def test_reference_example_byte_for_byte() -> None:
    # flannel-io/cni-plugin's own example: no cniVersion, IPMASQ=true
    assert delegate_conf.dumps(build(V4)) == (
        b'{"ipMasq":false,"ipam":{"ranges":[[{"subnet":"10.1.17.0/24"}]],"routes":[{"dst":"10.1.0.0/16"}],'
        b'"type":"host-local"},"isGateway":true,"mtu":1472,"name":"cni-flannel","type":"bridge"}'
    )


def test_v6_only() -> None:
    conf = build(V6, cniVersion="1.0.0")
    assert conf["ipam"]["ranges"] == [[{"subnet": "fd00:1:0:11::/64"}]]
    assert conf["ipam"]["routes"] == [{"dst": "fd00:1::/56"}]
    assert conf["ipMasq"] is True and conf["mtu"] == 1452 and conf["cniVersion"] == "1.0.0"


def test_dual_stack_v4_range_first() -> None:
    conf = build(DUAL)
    assert conf["ipam"]["ranges"] == [[{"subnet": "10.244.3.0/24"}], [{"subnet": "fd00:10:244:3::/64"}]]
    assert conf["ipam"]["routes"] == [{"dst": "10.244.0.0/16"}, {"dst": "fd00:10:244::/56"}]


def test_network_lists_give_one_route_each() -> None:
    text = V4.replace("FLANNEL_NETWORK=10.1.0.0/16", "FLANNEL_NETWORK=10.1.0.0/16, 10.2.0.0/16")
    assert build(text)["ipam"]["routes"] == [{"dst": "10.1.0.0/16"}, {"dst": "10.2.0.0/16"}]


def test_custom_ipam_routes_come_first_and_ipam_keys_are_kept() -> None:
    conf = build(V4, ipam={"routes": [{"dst": "0.0.0.0/0"}], "dataDir": "/x"})
    assert conf["ipam"]["routes"] == [{"dst": "0.0.0.0/0"}, {"dst": "10.1.0.0/16"}]
    assert conf["ipam"]["dataDir"] == "/x" and conf["ipam"]["type"] == "host-local"


def test_delegate_overrides_win_and_runtime_config_passes() -> None:
    conf = build(
        V4,
        delegate={"hairpinMode": True, "isDefaultGateway": True, "ipMasq": True, "mtu": 1400, "isGateway": False},
        runtimeConfig={"portMappings": [{"hostPort": 80, "containerPort": 8080, "protocol": "tcp"}]},
    )
    assert (conf["hairpinMode"], conf["isDefaultGateway"], conf["ipMasq"], conf["mtu"], conf["isGateway"]) == (
        True, True, True, 1400, False,
    )
    assert conf["runtimeConfig"]["portMappings"][0]["hostPort"] == 80


def test_non_bridge_delegate_gets_no_isgateway() -> None:
    assert "isGateway" not in build(V4, delegate={"type": "ipvlan"})


@pytest.mark.parametrize(
    "delegate,match",
    [
        ({"name": "x"}, "must not have 'name'"),
        ({"ipam": {}}, "must not have 'ipam'"),
        ({"type": 5}, "string"),
        ("bridge", "JSON object"),
    ],
)
def test_bad_delegates(delegate: Any, match: str) -> None:
    with pytest.raises(InvalidConfig, match=match):
        build(V4, delegate=delegate)


def test_input_config_is_not_mutated() -> None:
    flannel = {"name": "n", "type": "flannel", "delegate": {"hairpinMode": True}, "ipam": {"routes": []}}
    before = json.dumps(flannel, sort_keys=True)
    delegate_conf.build(flannel, subnet_env.parse(V4))
    assert json.dumps(flannel, sort_keys=True) == before


# -- subnet.env --------------------------------------------------------------


def test_parser_tolerates_whitespace_comments_quotes_and_foreign_lines() -> None:
    env = subnet_env.parse("# written by flanneld\n\n  FLANNEL_NETWORK = 10.1.0.0/16 \nOTHER\nexport FLANNEL_SUBNET=\"10.1.17.1/24\"\n"
                           "FLANNEL_MTU=1472\r\nFLANNEL_IPMASQ=false\n")
    assert [str(s) for s in env.subnets] == ["10.1.17.0/24"] and env.mtu == 1472 and env.ipmasq is False


def test_render_round_trips() -> None:
    env = subnet_env.parse(DUAL)
    assert subnet_env.parse(env.render()) == env
    assert "FLANNEL_SUBNET=10.244.3.1/24" in env.render()


@pytest.mark.parametrize(
    "text,cls,words",
    [
        ("", TryAgainLater, "is empty"),
        ("# nothing yet\n", TryAgainLater, "is empty"),
        ("FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.17.1/24\n", TryAgainLater, "FLANNEL_MTU, FLANNEL_IPMASQ"),
        ("FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n", TryAgainLater, "FLANNEL_SUBNET"),
        ("FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.17.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMA", InvalidConfig, "no value"),
        (V4.replace("10.1.17.1/24", "10.9.17.1/24"), InvalidConfig, "outside"),
        (V4.replace("1472", "0"), InvalidConfig, "FLANNEL_MTU=0"),
        (V4.replace("1472", "big"), InvalidConfig, "FLANNEL_MTU=big"),
        (V4.replace("10.1.0.0/16", "10.1.0.0/99"), InvalidConfig, "not a valid CIDR"),
        (V4.replace("10.1.0.0/16", "fd00::/16"), InvalidConfig, "not an IPv4"),
        (V4.replace("IPMASQ=true", "IPMASQ=yes"), InvalidConfig, "true or false"),
        ("\x00\x01garbage\n", TryAgainLater, "is empty"),
    ],
)
def test_bad_subnet_env(text: str, cls: type, words: str) -> None:
    with pytest.raises(cls) as info:
        subnet_env.parse(text, "/run/flannel/subnet.env")
    assert words in str(info.value) and "/run/flannel/subnet.env" in str(info.value)


def test_subnet_without_prefix_length_is_refused() -> None:
    # found by the fuzzer: a bare address read as a /32 subnet
    with pytest.raises(InvalidConfig, match="FLANNEL_SUBNET=10.244.1.0 is not a valid CIDR"):
        subnet_env.parse("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.0\nFLANNEL_MTU=1450\n"
                         "FLANNEL_IPMASQ=true\n")


def test_missing_file_is_try_again(tmp_path: Any) -> None:
    with pytest.raises(TryAgainLater) as info:
        subnet_env.load(str(tmp_path / "subnet.env"))
    assert info.value.code == 11 and "flanneld" in info.value.details


@pytest.mark.parametrize("kind", ["dev-zero", "fifo", "directory", "huge"])
def test_subnet_file_that_is_no_subnet_env_is_code_7_without_hanging(tmp_path: Any, kind: str) -> None:
    path = {"dev-zero": "/dev/zero", "directory": str(tmp_path)}.get(kind, str(tmp_path / "subnet.env"))
    if kind == "fifo":
        os.mkfifo(path)  # nobody writes: a blocking read would hang for ever
    if kind == "huge":
        with open(path, "w") as f:
            f.write("FLANNEL_MTU=1450\n" + "#" * (1 << 20))
    with pytest.raises(InvalidConfig) as info:
        subnet_env.load(path)
    assert path in info.value.msg


# -- saved configs ------------------------------------------------------------


def test_saved_conf_is_private_and_atomic(tmp_path: Any) -> None:
    d = str(tmp_path / "flannel")
    saved_conf.save(d, "c1", b'{"type":"bridge"}')
    path = os.path.join(d, "c1")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert saved_conf.load(d, "c1") == b'{"type":"bridge"}'
    open(os.path.join(d, "c2.tmp.123"), "w").close()  # an interrupted save
    assert saved_conf.container_ids(d) == ["c1"]
    saved_conf.remove(d, "c1")
    saved_conf.remove(d, "c1")
    assert saved_conf.load(d, "c1") is None


def test_interrupted_saves_go_with_their_container(tmp_path: Any) -> None:
    """A save SIGKILLed before its rename leaves .<id>.tmp.<pid> (found by crash injection):
    the container's DEL removes it, and GC sees the container through it."""
    d = str(tmp_path / "flannel")
    saved_conf.save(d, "a.b", b"{}")
    for name in (".a.b.tmp.41", ".gone.tmp.42", ".a.b.tmp.x"):
        open(os.path.join(d, name), "w").close()
    assert saved_conf.container_ids(d) == ["a.b"]
    assert saved_conf.container_ids(d, interrupted=True) == ["a.b", "gone"]
    saved_conf.remove(d, "a.b")
    saved_conf.remove(d, "gone")
    assert sorted(os.listdir(d)) == [".a.b.tmp.x"]  # not a temp file name of ours: left alone


def test_save_failure_is_io_error(tmp_path: Any) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(CNIError) as info:
        saved_conf.save(str(blocker / "sub"), "c1", b"{}")
    assert info.value.code == 5
