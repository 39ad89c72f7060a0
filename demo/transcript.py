"""Reading command output and the demo's own transcript (pure functions; tests/unit/test_demo_transcript.py).

The demo uses these on the output of ping, tcpdump and iperf3; the tests use them on what the
demo printed, so both read the same facts the same way.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Dict, List, Optional

ANSI_RE = re.compile(r"\033\[[0-9;]*m")
COMMAND_RE = re.compile(r"^\[([^\]]+)\]\$ (.*)$")
MODE_RE = re.compile(r"^== mode (\S+):")
TTL_RE = re.compile(r"\bttl=(\d+)")
CAPTURED_RE = re.compile(r"^(\d+) packets? captured", re.M)


@dataclass(frozen=True)
class Command:
    where: str   # node1, pod a, etcd ...
    cmd: str     # as shown
    output: str  # its output, indentation removed


def plain(text: str) -> str:
    return ANSI_RE.sub("", text)


def commands(text: str) -> List[Command]:
    """Every `[where]$ cmd` block of a transcript with the indented lines after it."""
    found: List[Command] = []
    where = cmd = None
    lines: List[str] = []
    for line in plain(text).splitlines() + [""]:
        if where is not None and line.startswith("    "):
            lines.append(line[4:])
            continue
        if where is not None:
            found.append(Command(where, cmd or "", "\n".join(lines)))
            where, lines = None, []
        m = COMMAND_RE.match(line)
        if m:
            where, cmd = m.group(1), m.group(2)
    return found


def modes(text: str) -> Dict[str, str]:
    """The transcript cut at its `== mode <name>:` headings (the part before the first is dropped)."""
    parts: Dict[str, List[str]] = {}
    current: Optional[str] = None
    for line in plain(text).splitlines():
        m = MODE_RE.match(line)
        if m:
            current = m.group(1)
            parts[current] = []
        if current is not None:
            parts[current].append(line)
    return {mode: "\n".join(lines) for mode, lines in parts.items()}


def find(cmds: List[Command], where: str, cmd_start: str) -> List[Command]:
    return [c for c in cmds if c.where == where and c.cmd.startswith(cmd_start)]


def ping_ttls(output: str) -> List[int]:
    """TTLs of the echo replies in iputils ping output."""
    return [int(t) for t in TTL_RE.findall(output)]


def packets_captured(stderr: str) -> Optional[int]:
    """tcpdump's closing "N packets captured"; None when it did not print one (it did not exit cleanly)."""
    m = CAPTURED_RE.search(stderr)
    return int(m.group(1)) if m else None


def iperf3_receiver_bps(json_text: str) -> float:
    """Bits per second the iperf3 receiver saw (iperf3 --json)."""
    data = json.loads(json_text)
    if "error" in data:
        raise ValueError(f"iperf3: {data['error']}")
    return float(data["end"]["sum_received"]["bits_per_second"])


def subnet_env(text: str) -> Dict[str, str]:
    """FLANNEL_* keys of a subnet.env."""
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))
