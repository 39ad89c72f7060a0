"""Fuzz one plugin with hypothesis, run *inside a test node* (its network and mount namespaces):

    python -m tests.fuzz.plugins --plugin bridge --netns /run/netns/<pod> --examples 1000 [--exec]

Each case is a CNI_* environment and a stdin drawn from tests/fuzz/strategies.py, run through
the dispatcher in this process (skel.run: thousands of cases quickly) or, with --exec, through
the plugin binary in /opt/cni/bin (the frozen build) as a runtime runs it.  Every case must end
in a result or in the spec's error JSON that is not the dispatcher's "internal error in …"
(a caught exception: a traceback in the log); a failing case must leave the node exactly as it was, and a successful ADD
is followed by a DEL that must succeed and release the addresses.  Prints one JSON line of counts.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections import Counter
from typing import Any, Dict, List, Optional, Tuple

from hypothesis import given

from tests.fuzz import strategies as S
from tests.fuzz.settings import fuzz_settings

# One exec for the whole snapshot; `set -e`: a failing tool fails the case instead of reading as "".
# Carrier flags, link-local IPv6 and packet counters are dropped: they change on their own (a
# bridge loses its carrier a moment after its last port goes; DAD ends whenever it ends).
SNAPSHOT = r"""set -e
ip -o link show | sed -E 's/ link-netnsid [0-9]+//; s/<[^>]*>//; s/ state [A-Z]+//'; echo ==
ip -o addr show | sed '/ fe80::/d'; echo ==
ip route show table all | sed '/fe80::/d; s/ linkdown//'; ip -6 route show table all | sed '/fe80::/d; s/ linkdown//'; echo ==
nft list ruleset | sed -E 's/counter packets [0-9]+ bytes [0-9]+/counter/'; echo ==
iptables-legacy-save | sed -E '/^#/d; s/\[[0-9]+:[0-9]+\]//'; ip6tables-legacy-save | sed -E '/^#/d; s/\[[0-9]+:[0-9]+\]//'; echo ==
cat /proc/sys/net/ipv4/ip_forward; echo ==
find /var/lib/cni /run/flannel /etc/cni/net.d -printf '%p %s %l\n' 2>/dev/null | sort || true
"""


def snapshot() -> str:
    done = subprocess.run(["sh", "-c", SNAPSHOT], capture_output=True, text=True, timeout=60)
    if done.returncode:
        raise RuntimeError(f"snapshot failed: {done.stderr}")
    return done.stdout


def is_bug(out: Dict[str, Any]) -> bool:
    """The dispatcher's report of an exception it caught (code 999 is also the reference's code
    for plain failures, e.g. a CHECK that finds the interface down: those are clean errors)."""
    return str(out.get("msg", "")).startswith("internal error in ") or "code" not in out


def held_addresses() -> List[str]:
    """Files in host-local's directories that hold an address (anything but lock/last_reserved)."""
    out = []
    for root, _, files in os.walk("/var/lib/cni/networks"):
        out += [os.path.join(root, f) for f in files if f != "lock" and not f.startswith("last_reserved_ip")]
    return out


class Fuzzer:
    def __init__(self, plugin: str, netns: str, use_exec: bool) -> None:
        self.plugin, self.netns, self.use_exec = plugin, netns, use_exec
        self.counts: Counter = Counter()
        self.first_failure: Optional[str] = None
        self.known: Optional[str] = None  # the node's state when no case changed it since
        self.messages: Counter = Counter()  # the commonest errors, to see where cases stop

    def invoke(self, environ: Dict[str, str], stdin: bytes) -> Tuple[int, Optional[Dict[str, Any]], str]:
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
               "CNI_FLANNEL_LOG": "/var/log/cni-fuzz.log", **environ}
        if self.use_exec:
            env = {k: v.replace("\0", "") for k, v in env.items()}  # exec cannot carry a NUL (nor can a runtime)
            done = subprocess.run([f"/opt/cni/bin/{self.plugin}"], input=stdin, env=env, capture_output=True,
                                  timeout=60)
            try:
                out = json.loads(done.stdout) if done.stdout.strip() else None
            except ValueError:
                out = {"code": 999, "msg": f"stdout is not JSON: {done.stdout[:200]!r}"}
            return done.returncode, out, done.stderr.decode(errors="replace")
        from cni_flannel.cni import skel

        code, out = skel.run(self.plugin, env, stdin)
        return code, out, ""

    def fail(self, why: str, environ: Dict[str, str], stdin: bytes) -> None:
        self.counts["failures"] += 1
        if self.first_failure is None:
            self.first_failure = f"{why}\n  env={environ}\n  stdin={stdin[:500]!r}"
        raise AssertionError(why)

    def case(self, environ: Dict[str, str], stdin: bytes) -> None:
        self.counts["cases"] += 1
        before = self.known or snapshot()
        self.known = None
        code, out, stderr = self.invoke(environ, stdin)
        if "Traceback" in stderr or (code != 0 and (not isinstance(out, dict) or is_bug(out))):
            self.counts["tracebacks"] += 1
            self.fail(f"traceback or internal error: rc={code} out={out} stderr={stderr[-800:]}", environ, stdin)
        if code != 0:
            self.counts["errors"] += 1
            self.messages[f"{out.get('code')}: {str(out.get('msg'))[:50]}"] += 1
            if not out.get("msg") or not isinstance(out.get("code"), int):
                self.fail(f"error without code/msg: {out}", environ, stdin)
            after = snapshot()
            if after != before:
                self.counts["changed"] += 1
                self.fail(f"failed {environ.get('CNI_COMMAND')} changed the node:\n{diff(before, after)}",
                          environ, stdin)
            self.known = after
            return
        self.counts["ok"] += 1
        if environ.get("CNI_COMMAND") == "ADD":
            if not isinstance(out, dict) or "cniVersion" not in out:
                self.fail(f"ADD result is not a result: {out}", environ, stdin)
            dcode, dout, dstderr = self.invoke({**environ, "CNI_COMMAND": "DEL"}, stdin)
            if dcode != 0:
                self.fail(f"DEL after a good ADD failed: {dout} {dstderr[-500:]}", environ, stdin)
            if held_addresses():
                self.counts["leaks"] += 1
                self.fail(f"ADD+DEL left addresses held: {held_addresses()}", environ, stdin)


def diff(a: str, b: str) -> str:
    import difflib

    return "\n".join(difflib.unified_diff(a.splitlines(), b.splitlines(), "before", "after", lineterm="", n=1))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--plugin", required=True)
    ap.add_argument("--netns", required=True)
    ap.add_argument("--examples", type=int, default=100)
    ap.add_argument("--exec", dest="use_exec", action="store_true")
    args = ap.parse_args()
    fz = Fuzzer(args.plugin, args.netns, args.use_exec)

    @fuzz_settings(args.examples)
    @given(S.cni_env(args.netns), S.plugin_stdin(args.plugin))
    def run(environ: Dict[str, str], stdin: bytes) -> None:
        fz.case(environ, stdin)

    error = None
    try:
        run()
    except Exception as exc:  # hypothesis re-raises the shrunk failure
        error = f"{type(exc).__name__}: {exc}"
    print(json.dumps({"target": f"{args.plugin}{' (exec)' if args.use_exec else ''}", **fz.counts,
                      "first_failure": fz.first_failure, "error": error,
                      "top_errors": fz.messages.most_common(int(os.environ.get("CNI_FUZZ_TOP", "8")))}))
    return 1 if error else 0


if __name__ == "__main__":
    sys.exit(main())
