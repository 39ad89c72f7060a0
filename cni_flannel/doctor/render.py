"""The report as a table (colour on a TTY) or as JSON."""

from __future__ import annotations

import json
import shutil
import textwrap
from typing import List

from .model import FAIL, OK, UNKNOWN, Report

SYMBOL = {OK: "✔", FAIL: "✘", UNKNOWN: "!"}
COLOUR = {OK: "\033[32m", FAIL: "\033[31m", UNKNOWN: "\033[33m"}
RESET, BOLD, DIM = "\033[0m", "\033[1m", "\033[2m"
MAX_ITEMS = 12


def to_json(report: Report) -> str:
    return json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n"


def table(report: Report, colour: bool = False, verbose: bool = False, width: int = 0) -> str:
    width = width or max(80, min(shutil.get_terminal_size((120, 20)).columns, 160))
    c = (lambda code, text: f"{code}{text}{RESET}") if colour else (lambda code, text: text)
    lines: List[str] = [c(BOLD, f"flanneld doctor: node {report.node or '?'}") + f" ({report.elapsed:.2f} s)"]
    if report.error:
        lines.append(c(COLOUR[FAIL], f"cannot inspect this node: {report.error}"))
        return "\n".join(lines) + "\n"
    name_w = max((len(ch.title) for ch in report.checks), default=10)
    indent = " " * (name_w + 5)
    fixed = {}  # fix text -> the check that printed it first
    for ch in report.checks:
        head = f"{c(COLOUR[ch.status], SYMBOL[ch.status])}  {ch.title.ljust(name_w)}  "
        body = textwrap.wrap(ch.evidence, width - len(indent)) or [""]
        lines.append(head + body[0])
        lines += [indent + b for b in body[1:]]
        show_items = ch.items if (verbose or ch.status == FAIL) else ()
        for item in show_items[:MAX_ITEMS if not verbose else None]:
            lines.append(indent + c(DIM, "· ") + item)
        if len(show_items) > MAX_ITEMS and not verbose:
            lines.append(indent + c(DIM, f"· ... {len(show_items) - MAX_ITEMS} more (-v shows all)"))
        if ch.status == FAIL and ch.fix:  # one line, never wrapped: commands in it must copy-paste whole
            fix = f"fix: as for '{fixed[ch.fix]}' above" if ch.fix in fixed else "fix: " + ch.fix
            fixed.setdefault(ch.fix, ch.title)
            lines.append(indent + c(BOLD, fix))
    n = report.counts()
    lines.append("")
    lines.append(f"{n[OK]} ok, {n[FAIL]} failed, {n[UNKNOWN]} not checked"
                 + (" -- '!' marks what could not be checked, not a fault" if n[UNKNOWN] else ""))
    return "\n".join(lines) + "\n"
