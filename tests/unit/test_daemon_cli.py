"""flanneld's command line: Go flag syntax, upstream defaults, FLANNELD_* env forms, one-line
usage errors (exit 2), and the option values the main loop gets."""
from __future__ import annotations

import pytest

from cni_flannel.daemon import cli


def flags(args, monkeypatch=None, **env):
    if monkeypatch:
        for k, v in env.items():
            monkeypatch.setenv(k, v)
    out = cli.command.main(args=cli.go_style(args), prog_name="flanneld", standalone_mode=False)
    cli.check(out)
    return out


def test_defaults_are_upstreams():
    f = flags([])
    assert f["etcd_endpoints"] == "http://127.0.0.1:4001,http://127.0.0.1:2379"
    assert f["etcd_prefix"] == "/coreos.com/network" and f["subnet_file"] == "/run/flannel/subnet.env"
    assert (f["subnet_lease_renew_margin"], f["iptables_resync"], f["healthz_port"]) == (60, 5, 0)
    assert (f["ip_masq"], f["iptables_forward_rules"], f["kube_subnet_mgr"]) == (False, True, False)
    assert f["set_node_network_unavailable"] and f["healthz_ip"] == "0.0.0.0"
    assert f["kube_annotation_prefix"] == "flannel.alpha.coreos.com"
    assert f["net_config_path"] == "/etc/kube-flannel/net-conf.json"


def test_kube_flannel_yml_command_line():
    f = flags(["--ip-masq", "--kube-subnet-mgr", "--healthz-port=8081"])
    assert f["ip_masq"] and f["kube_subnet_mgr"] and f["healthz_port"] == 8081


@pytest.mark.parametrize("args", [["-iface", "eth1", "-iface=eth2", "--iface", "192.0.2.7"],
                                  ["--iface=eth1", "-iface", "eth2", "--iface=192.0.2.7"]])
def test_go_flag_forms_and_repeats(args):
    assert flags(args)["iface"] == ("eth1", "eth2", "192.0.2.7")


@pytest.mark.parametrize("arg,value", [("--ip-masq", True), ("-ip-masq=true", True), ("--ip-masq=0", False),
                                       ("--iptables-forward-rules=false", False), ("-ip-masq=T", True)])
def test_go_booleans(arg, value):
    name = arg.lstrip("-").split("=")[0].replace("-", "_")
    assert flags([arg])[name] is value


def test_env_forms_and_command_line_wins(monkeypatch):
    f = flags(["--iface=eth9"], monkeypatch, FLANNELD_IFACE="eth1", FLANNELD_IP_MASQ="true",
              FLANNELD_ETCD_PREFIX="/x/network", FLANNELD_SUBNET_LEASE_RENEW_MARGIN="30")
    assert f["iface"] == ("eth9",) and f["ip_masq"] and f["etcd_prefix"] == "/x/network"
    assert f["subnet_lease_renew_margin"] == 30
    opts = cli.daemon_options(f)
    assert opts.renew_margin == 1800 and opts.ip_masq and opts.iface.ifaces == ["eth9"]


def test_verbosity_flag():
    assert flags(["-v=2"])["verbosity"] == 2 and flags(["-v", "3"])["verbosity"] == 3


@pytest.mark.parametrize("args,needle", [
    (["--bogus"], "No such option: --bogus"),
    (["--ip-masq=maybe"], "invalid boolean value"),
    (["--subnet-lease-renew-margin=0"], "1 to 1439"),
    (["--subnet-lease-renew-margin=1440"], "1 to 1439"),
    (["--subnet-lease-renew-margin=x"], "not a valid integer"),
    (["--iptables-resync=0"], "at least 1 second"),
    (["--healthz-port=70000"], "not a TCP port"),
    (["--public-ip=2001:db8::1"], "not an IPv4 address"),
    (["--public-ipv6=192.0.2.1"], "not an IPv6 address"),
    (["--public-ip=nope"], "not an IPv4 address"),
    (["--healthz-ip=localhost"], "IPv4 or IPv6"),
    (["--etcd-certfile=/c.pem"], "go together"),
    (["--kube-subnet-mgr", "--etcd-endpoints=http://192.0.2.1:2379"], "contradicts --etcd-endpoints"),
    (["--kubeconfig-file=/k"], "needs --kube-subnet-mgr"),
    (["--kube-api-url=https://192.0.2.1"], "needs --kube-subnet-mgr"),
    (["stray"], "unexpected extra argument"),
    (["--iface"], "requires an argument"),
    (["--subnet-lease-ttl=5"], "at least 10 seconds"),
])
def test_bad_flags_exit_2_with_one_line(args, needle, capsys):
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("flanneld: error: ") and needle in err, err


def test_version(capsys):
    assert cli.main(["--version"]) == 0 and cli.main(["-version"]) == 0
    assert capsys.readouterr().out.splitlines() == [cli.VERSION, cli.VERSION]


def test_short_test_ttl_renews_at_a_third():
    assert cli.renew_margin(flags(["--subnet-lease-ttl=30"])) == 10
    assert cli.renew_margin(flags([])) == 3600


def test_managers_are_a_registry():
    assert set(cli.MANAGERS) >= {"etcd", "kube"}


def test_doctor_is_dispatched(capsys):
    assert cli.main(["doctor", "--help"]) == 0
    assert "flanneld doctor" in capsys.readouterr().out
    assert cli.main(["doctor", "--no-such-doctor-flag"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no-such-doctor-flag" in err
