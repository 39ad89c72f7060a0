"""50 writer processes share chains in ONE test namespace while a kube-proxy-style
writer rewrites its own chains with iptables-restore in a loop.

Each writer applies, checks, removes and re-checks its own rule sets (bridge
ipMasq + portmap, so the shared POSTROUTING / CNI-HOSTPORT-DNAT or the shared
nft chains) for a few rounds; even writers finish applied, odd ones removed.
Afterwards every writer's rules are exactly as expected (each once), the
shared infrastructure rules exist once, and the kube writer's rules are intact.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import List

import pytest

from cni_flannel.firewall import IptablesFirewall, NftFirewall, Runner
from cni_flannel.firewall import _iptables as ipt
from cni_flannel.firewall import _nft as nft
from cni_flannel.firewall import layouts as L
from tests import firewall_samples as S
from tests.integration.test_firewall import BACKENDS, delete_netns, make_netns, require_backend, sh

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")

ROOT = str(Path(__file__).resolve().parents[2])
WRITERS, ROUNDS, KUBE_MAX_ITERATIONS = 50, 3, 5000


def make_firewall(backend: str, runner: Runner):
    return NftFirewall(runner) if backend == "nftables" else IptablesFirewall(backend.split("-")[1], runner)


def rulesets(backend: str, i: int):
    ip, cid = f"10.244.{i // 200}.{i % 200 + 2}", f"c{i:03d}"
    ports = [S.PortMapping(10000 + i, 80)]
    if backend == "nftables":
        return [L.ipmasq_nft(ip, "10.244.0.0/16", "cbr0", "eth0", cid), S.portmap_nft(ip, ports, cid)]
    return [L.ipmasq_iptables(ip, "10.244.0.0/16", "cbr0", cid),
            S.portmap_iptables(ip, "10.244.0.0/16", ports, "cbr0", cid)]


def writer(backend: str, i: int) -> int:
    """One writer process (run inside the test namespace)."""
    fw, sets, problems = make_firewall(backend, Runner()), rulesets(backend, i), []
    for rnd in range(ROUNDS):
        for rs in sets:
            fw.apply(rs)
        problems += [f"round {rnd}, applied: {p}" for rs in sets for p in fw.check(rs)]
        if rnd == ROUNDS - 1 and i % 2 == 0:
            break
        for rs in sets:
            fw.remove(rs)
        problems += [f"round {rnd}, removed but check passes" for rs in sets if not fw.check(rs)]
    print("\n".join(problems))
    return 1 if problems else 0


KUBE_TEMPLATE = """*nat
:KUBE-SERVICES - [0:0]
:KUBE-POSTROUTING - [0:0]
{chains}
-A KUBE-POSTROUTING -m mark --mark 0x4000/0x4000 -m comment --comment "iter {n}" -j MASQUERADE
{rules}
COMMIT
"""


def kube_input(n: int) -> str:
    svcs = range(5)
    chains = "\n".join(f":KUBE-SVC-{k} - [0:0]" for k in svcs)
    rules = "\n".join(
        f"-A KUBE-SERVICES -d 10.96.0.{k}/32 -p tcp -m tcp --dport 80 -m comment --comment \"iter {n}\" "
        f"-j KUBE-SVC-{k}\n-A KUBE-SVC-{k} -p tcp -j DNAT --to-destination 192.0.2.{k + 10}:{8000 + n}"
        for k in svcs)
    return KUBE_TEMPLATE.format(chains=chains, rules=rules, n=n)


def kube_writer(ns: str, mode: str, stop: threading.Event, result: List) -> None:
    """Rewrite the kube chains until the writers are done (bounded); result: [last n, errors]."""
    n, errors = 0, []
    while not stop.is_set() and n < KUBE_MAX_ITERATIONS:
        n += 1
        done = sh(["ip", "netns", "exec", ns, ipt.tool(mode, "ipv4", "restore"), "--noflush", "-w", "30"],
                  kube_input(n), check=False)
        if done.returncode:
            errors.append(f"kube iteration {n}: {done.stderr}")
    result += [n, errors]


def comment_counts(fw, backend: str, ns: str) -> Counter:
    counts: Counter = Counter()
    if backend == "nftables":
        for fam, table in (("inet", L.NFT_MASQ_TABLE), ("ipv4", S.NFT_HOSTPORT_TABLE)):
            for listed in (fw._snapshot(fam, table) or {}).values():
                counts.update(nft._comment_of(text) for text, _ in listed)
    else:
        for specs in fw._snapshot("ipv4", "nat").values():
            counts.update(ipt._option(ipt.tokens(s), "--comment") for s in specs)
    return counts


@pytest.fixture
def shared_ns():
    name = make_netns("fwc")
    try:
        yield name
    finally:
        delete_netns(name)


@pytest.mark.timeout(900)
@pytest.mark.parametrize("backend", BACKENDS)
def test_fifty_writers_and_a_kube_proxy(shared_ns, backend):
    require_backend(shared_ns, backend)
    kube_mode = "legacy" if backend == "iptables-legacy" else "nft"
    require_backend(shared_ns, f"iptables-{kube_mode}")
    # kube-proxy's own jump rules, made once (it checks and inserts them itself)
    sh(["ip", "netns", "exec", shared_ns, ipt.tool(kube_mode, "ipv4", "restore"), "--noflush", "-w", "30"],
       kube_input(0).replace("COMMIT", "-A PREROUTING -j KUBE-SERVICES\n-A POSTROUTING -j KUBE-POSTROUTING\nCOMMIT"))

    env = dict(os.environ, PYTHONPATH=ROOT)
    code = ("import sys; from tests.integration.test_firewall_concurrency import writer; "
            "sys.exit(writer(sys.argv[1], int(sys.argv[2])))")
    stop, kube_result = threading.Event(), []  # type: ignore[var-annotated]
    kube = threading.Thread(target=kube_writer, args=(shared_ns, kube_mode, stop, kube_result))
    procs = [subprocess.Popen(["ip", "netns", "exec", shared_ns, sys.executable, "-c", code, backend, str(i)],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(WRITERS)]
    kube.start()
    outputs = [(p.communicate(timeout=600)[0], p.returncode) for p in procs]
    stop.set()
    kube.join(timeout=600)
    last, kube_errors = kube_result
    print(f"kube-proxy writer ran {last} iterations during the writers")

    failed = [f"writer {i} exit {rc}: {out[-2000:]}" for i, (out, rc) in enumerate(outputs) if rc]
    assert not failed, "\n".join(failed[:5])
    assert not kube_errors, kube_errors[:3]

    fw = make_firewall(backend, Runner.in_netns(shared_ns))
    counts = comment_counts(fw, backend, shared_ns)
    for i in range(WRITERS):
        for rs in rulesets(backend, i):
            own = sum(r.comment == rs.comment for c in rs.chains for r in c.rules)
            if i % 2 == 0:
                assert fw.check(rs) == [], f"writer {i}"
                assert counts[rs.comment] == own, f"writer {i}: {rs.comment} x{counts[rs.comment]}"
            else:
                assert counts[rs.comment] == 0 and len(fw.check(rs)) > 0, f"writer {i}"
    # the shared infrastructure exists exactly once
    if backend == "nftables":
        state = fw._snapshot("inet", L.NFT_MASQ_TABLE)
        assert [t for t, _ in state["postrouting"]] == ["ip daddr 224.0.0.0/4 return",
                                                        "ip6 daddr ff00::/8 return", "jump masq_checks"]
    else:
        state = fw._snapshot("ipv4", "nat")
        for chain in ("PREROUTING", "OUTPUT"):
            assert state[chain].count("-m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT") == 1
        assert state["CNI-HOSTPORT-SETMARK"] == [
            '-m comment --comment "CNI portfwd masquerade mark" -j MARK --set-xmark 0x2000/0x2000']
        assert len(state["CNI-HOSTPORT-DNAT"]) == WRITERS // 2
        assert sorted(c for c in state if c.startswith("CNI-") and not c.startswith("CNI-HOSTPORT")) == \
            sorted(c.name for i in range(0, WRITERS, 2) for rs in rulesets(backend, i)
                   for c in rs.chains if c.owned)
    # the kube-proxy writer lost nothing: its chains hold the last iteration, its jumps exist once
    kube = ipt.parse_save(sh(["ip", "netns", "exec", shared_ns, ipt.tool(kube_mode, "ipv4", "save"),
                              "-t", "nat"]).stdout)
    want = ipt.parse_save(kube_input(last))
    for chain, specs in want.items():
        assert [ipt.tokens(s) for s in kube[chain]] == [ipt.tokens(s) for s in specs], chain
    assert kube["PREROUTING"].count("-j KUBE-SERVICES") == 1
    assert kube["POSTROUTING"].count("-j KUBE-POSTROUTING") == 1
