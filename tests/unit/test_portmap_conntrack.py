"""UDP conntrack flushing: parse what exists, delete only the ports that have
entries, in one conntrack exec; failures never fail the plugin."""
from __future__ import annotations

import subprocess

import pytest

from cni_flannel.portmap import conntrack

PROC = """\
ipv4     2 udp      17 29 src=198.18.0.2 dst=198.18.0.1 sport=40000 dport=5353 src=10.244.1.2 dst=198.18.0.2 sport=53 dport=40000 mark=0 zone=0 use=2
ipv4     2 tcp      6 431999 ESTABLISHED src=198.18.0.2 dst=198.18.0.1 sport=4000 dport=8080 src=10.244.1.2 dst=198.18.0.2 sport=80 dport=4000 [ASSURED] mark=0 zone=0 use=2
ipv6     10 udp      17 20 src=2001:db8::2 dst=2001:db8::1 sport=1000 dport=5353 [UNREPLIED] src=fd00::2 dst=2001:db8::2 sport=53 dport=1000 mark=0 zone=0 use=2
ipv4     2 udp      17 20 src=198.18.0.2 dst=198.18.0.1 sport=1000 dport=9999 [UNREPLIED] src=198.18.0.1 dst=198.18.0.2 sport=9999 dport=1000 mark=0 zone=0 use=2
"""
CLI = "udp      17 99 src=127.0.0.1 dst=127.0.0.1 sport=1000 dport=53 [UNREPLIED] src=127.0.0.1 dst=127.0.0.1 sport=53 dport=1000 mark=0 use=1\n"


def test_parse_proc_table_and_cli_output():
    assert conntrack.udp_entries(PROC.splitlines()) == {("ipv4", 5353), ("ipv6", 5353), ("ipv4", 9999)}
    assert conntrack.udp_entries(CLI.splitlines(), "ipv4") == {("ipv4", 53)}


def test_commands():
    assert conntrack.commands([("ipv6", 53), ("ipv4", 53)]) == (
        "-D -f ipv4 -p udp --orig-port-dst 53\n-D -f ipv6 -p udp --orig-port-dst 53\n")


class Runner:
    def __init__(self, rc=0, listing=""):
        self.calls, self.rc, self.listing = [], rc, listing

    def run(self, argv, stdin="", check=True):
        self.calls.append((argv, stdin))
        out = self.listing if argv[1:4] == ["-L", "-f", "ipv4"] else ""
        return subprocess.CompletedProcess(argv, self.rc, out, "boom" if self.rc else "")


@pytest.fixture
def proc(tmp_path, monkeypatch):
    def make(table=PROC, count="4"):
        (tmp_path / "count").write_text(count)
        if table is not None:
            (tmp_path / "table").write_text(table)
        monkeypatch.setattr(conntrack, "PROC_COUNT", str(tmp_path / "count"))
        monkeypatch.setattr(conntrack, "PROC_TABLE", str(tmp_path / "table"))
    return make


def test_only_ports_with_entries_are_deleted_in_one_exec(proc):
    proc()
    r = Runner()
    assert conntrack.flush_udp([5353, 8080, 53], ["ipv4", "ipv6"], r)
    assert r.calls == [(["conntrack", "-R", "-"],
                        "-D -f ipv4 -p udp --orig-port-dst 5353\n-D -f ipv6 -p udp --orig-port-dst 5353\n")]


def test_nothing_to_delete_means_no_exec(proc):
    proc()
    r = Runner()
    assert conntrack.flush_udp([7000], ["ipv4"], r) and r.calls == []
    proc(count="0")
    assert conntrack.flush_udp([5353], ["ipv4"], r) and r.calls == []
    assert conntrack.flush_udp([], ["ipv4"], r) and r.calls == []


def test_without_the_proc_table_it_lists_with_the_cli(proc):
    proc(table=None)
    r = Runner(listing=CLI)
    assert conntrack.flush_udp([53], ["ipv4", "ipv6"], r)
    assert [c[0][:3] for c in r.calls] == [["conntrack", "-L", "-f"], ["conntrack", "-L", "-f"], ["conntrack", "-R", "-"]]
    assert r.calls[-1][1] == "-D -f ipv4 -p udp --orig-port-dst 53\n"


def test_failures_are_not_fatal(proc):
    proc()
    assert conntrack.flush_udp([5353], ["ipv4"], Runner(rc=1)) is False

    class Missing:
        def run(self, *a, **k):
            raise FileNotFoundError("conntrack")

    proc(table=None)
    assert conntrack.flush_udp([5353], ["ipv4"], Missing()) is False
