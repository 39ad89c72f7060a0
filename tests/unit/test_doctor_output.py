"""doctor's report: exit codes, JSON schema (and that the validator rejects bad documents),
the table, metrics and iptables-save parsing, the GC command, leftovers."""
from __future__ import annotations

import json
import shlex

from cni_flannel.doctor import checks_firewall as FW
from cni_flannel.doctor import checks_leftovers as LO
from cni_flannel.doctor import gc
from cni_flannel.doctor import model as M
from cni_flannel.doctor.collect_fw import split_tables
from cni_flannel.doctor.facts import Held, IptablesSave, PodNet
from cni_flannel.doctor.remote import parse_metrics
from cni_flannel.doctor.render import table, to_json
from cni_flannel.firewall import _iptables as ipt
from cni_flannel.firewall import layouts as L
from tests.unit.test_doctor_checks import node

CONFLIST = {"name": "cbr0", "cniVersion": "1.0.0",
            "plugins": [{"type": "flannel", "delegate": {"hairpinMode": True}}, {"type": "portmap", "capabilities": {"portMappings": True}}]}


def report(*checks: M.Check) -> M.Report:
    return M.Report(checks, "n1", 0.1)


def test_exit_codes():
    assert report(M.ok("a", "A", "fine"), M.unknown("b", "B", "not here")).exit_code == 0
    assert report(M.ok("a", "A", "fine"), M.fail("b", "B", "broken", "fix it")).exit_code == 1
    assert M.Report((), "n1", error="no netlink").exit_code == 2


def test_json_matches_the_schema_and_the_validator_rejects_bad_documents():
    doc = json.loads(to_json(report(M.fail("b", "B", "broken", "fix it", items=("x",)))))
    assert M.schema_errors(doc) == []
    assert doc["checks"][0] == {"id": "b", "title": "B", "status": "fail", "evidence": "broken", "fix": "fix it",
                                "items": ["x"]}
    bad = dict(doc, exit_code=5, extra=1)
    bad["checks"] = [dict(doc["checks"][0], status="maybe", items=[1])]
    del bad["summary"]
    errors = M.schema_errors(bad)
    assert any("exit_code" in e for e in errors) and any("extra" in e for e in errors)
    assert any("status" in e for e in errors) and any("items[0]" in e for e in errors)
    assert any("summary" in e for e in errors)


def test_table_marks_and_colour():
    r = report(M.ok("a", "subnet.env", "fine"), M.fail("b", "cni0 address", "broken", "ip link delete cni0"),
               M.unknown("c", "lease", "no store"))
    text = table(r, colour=False, width=100)
    assert "✔  subnet.env" in text and "✘  cni0 address" in text and "!  lease" in text
    assert "fix: ip link delete cni0" in text and "\033[" not in text
    assert "\033[31m✘" in table(r, colour=True, width=100)
    gc_fix = "echo '{\"a\": 1}' | CNI_COMMAND=GC /opt/cni/bin/flannel " + "x" * 120
    twice = table(report(M.fail("a", "IPAM leaks", "held", gc_fix), M.fail("b", "saved configs", "saved", gc_fix)),
                  width=80)
    assert "fix: " + gc_fix in twice  # never wrapped: the command copy-pastes whole
    assert "fix: as for 'IPAM leaks' above" in twice


def test_metrics_parsing():
    text = "# HELP x\nflannel_lease_expiration_timestamp_seconds 1.7e9\nflannel_udp_packets_total{direction=\"tx\"} 4\n"
    assert parse_metrics(text) == {"flannel_lease_expiration_timestamp_seconds": 1.7e9, "flannel_udp_packets_total": 4.0}


def test_gc_command_lists_only_live_attachments():
    cmd = gc.command(CONFLIST, [("keep", "eth0")])
    parts = cmd.split(" && ")
    assert len(parts) == 2 and parts[1].endswith("/opt/cni/bin/portmap")
    conf = json.loads(shlex.split(parts[0])[1])
    assert conf["cniVersion"] == "1.1.0" and conf["name"] == "cbr0" and conf["type"] == "flannel"
    assert conf["cni.dev/valid-attachments"] == [{"containerID": "keep", "ifname": "eth0"}]
    assert "CNI_COMMAND=GC" in parts[0]


def test_split_tables_and_forward_policy():
    save = ("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"
            "*nat\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n")
    tables = split_tables(save)
    assert sorted(tables) == ["filter", "nat"]
    f = node(iptables_mode="nft", iptables=[IptablesSave("nft", "ipv4", tables)])
    r = FW.forward_policy(f)
    assert r.status == M.FAIL and "iptables -A FORWARD -s 10.244.0.0/16 -j ACCEPT" in r.fix
    fwd = "\n".join(f"-A {c.name} {ipt.rule_spec(rule)}" for c in L.flannel_forward_iptables("10.244.0.0/16").chains
                    for rule in c.rules)
    ok = save.replace(":OUTPUT ACCEPT [0:0]\n", f":OUTPUT ACCEPT [0:0]\n:FLANNEL-FWD - [0:0]\n{fwd}\n")
    f.iptables = [IptablesSave("nft", "ipv4", split_tables(ok))]
    assert FW.forward_policy(f).status == M.OK


def test_masquerade_complete_and_flushed():
    rs = L.flannel_masq_iptables("10.244.0.0/16", "10.244.1.0/24")
    lines = ["*nat", ":POSTROUTING ACCEPT [0:0]", ":FLANNEL-POSTRTG - [0:0]"]
    lines += [f"-A {c.name} {ipt.rule_spec(r)}" for c in rs.chains for r in c.rules] + ["COMMIT"]
    f = node(iptables_mode="nft", iptables=[IptablesSave("nft", "ipv4", split_tables("\n".join(lines) + "\n"))])
    assert FW.masquerade(f).status == M.OK
    flushed = [l for l in lines if not l.startswith("-A FLANNEL-POSTRTG")]
    f.iptables = [IptablesSave("nft", "ipv4", split_tables("\n".join(flushed) + "\n"))]
    r = FW.masquerade(f)
    assert r.status == M.FAIL and len(r.items) == 6


def test_leaks_and_orphans():
    f = node(cni_conf=CONFLIST, held=[Held("cbr0", "10.244.1.2", "live", "eth0"), Held("cbr0", "10.244.1.3", "dead", "eth0")],
             saved_configs=["dead", "live"], pods=[PodNet("/run/netns/p1", 0, ("10.244.1.2",))])
    r = LO.ipam_leaks(f)
    assert r.status == M.FAIL and r.items == ("10.244.1.3 held by dead eth0",)
    assert '"containerID":"live"' in r.fix and '"dead"' not in r.fix
    assert LO.saved_configs(f).items == ("dead",)
    f.unavailable["ipam"] = "the flannel network uses IPAM 'dhcp', not host-local"
    assert LO.ipam_leaks(f).status == M.UNKNOWN


def test_firewall_leftovers_from_bridge_masq_portmap_and_spoofcheck_chains():
    live, dead = ("live", "eth0"), ("dead", "eth0")
    masq = {c: L.ipmasq_iptables("10.244.1.3", "10.244.1.0/24", "cbr0", c) for c in ("live", "dead")}
    lines = ["*nat", ":POSTROUTING ACCEPT [0:0]"]
    for rs in masq.values():
        lines += [f":{c.name} - [0:0]" for c in rs.chains if c.owned]
        lines += [f"-A {c.name} {ipt.rule_spec(r)}" for c in rs.chains for r in c.rules]
    nat = "\n".join(lines + ["COMMIT"]) + "\n"
    spoof = ("table bridge cni_spoofcheck {\n\tchain prerouting {\n\t}\n"
             "\tchain cni-br-iface-dead-eth0 {\n\t}\n\tchain cni-br-iface-dead-eth0-mac {\n\t}\n"
             "\tchain cni-br-iface-live-eth0 {\n\t}\n}\n")
    f = node(cni_conf=CONFLIST, iptables_mode="nft", iptables=[IptablesSave("nft", "ipv4", split_tables(nat))],
             nft_text=spoof, held=[Held("cbr0", "10.244.1.2", *live), Held("cbr0", "10.244.1.9", *dead)],
             pods=[PodNet("/run/netns/p1", 0, ("10.244.1.2",))])
    r = LO.firewall_leftovers(f)
    assert r.status == M.FAIL
    assert r.items == (f"ipv4 nat {masq['dead'].chains[0].name} (container dead)",
                       "bridge cni_spoofcheck cni-br-iface-dead-eth0")
    f.held = f.held[:1] + [Held("cbr0", "10.244.1.9", "dead", "eth0")]
    f.pods = [PodNet("/run/netns/p1", 0, ("10.244.1.2", "10.244.1.9"))]
    assert LO.firewall_leftovers(f).status == M.OK


def test_cli_without_root_cannot_inspect(monkeypatch):
    from click.testing import CliRunner

    from cni_flannel.doctor.cli import doctor

    monkeypatch.setattr("os.geteuid", lambda: 1000)
    result = CliRunner().invoke(doctor, ["--json"])
    assert result.exit_code == 2
    doc = json.loads(result.output)
    assert M.schema_errors(doc) == [] and doc["error"].startswith("doctor needs root")
