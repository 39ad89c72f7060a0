"""Percentiles, ratios, the machine's state, and the printed table."""

from __future__ import annotations

import math
import os
import subprocess
from pathlib import Path
from typing import Dict, List, Optional, Sequence

REPO = Path(__file__).resolve().parents[2]


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100): p95 of 30 samples is the 29th smallest."""
    data = sorted(values)
    if not data:
        return float("nan")
    rank = max(1, math.ceil(q / 100 * len(data)))
    return data[rank - 1]


def summary(wall_s: List[float], cpu_s: List[float]) -> Dict:
    """Wall and CPU (user+sys) samples in ms with p50/p95."""
    wall = [round(v * 1000, 3) for v in wall_s]
    cpu = [round(v * 1000, 3) for v in cpu_s]
    return {"n": len(wall), "p50_ms": percentile(wall, 50), "p95_ms": percentile(wall, 95),
            "cpu_p50_ms": percentile(cpu, 50) if cpu else None, "wall_ms": wall, "cpu_ms": cpu}


def ratio(ours: Optional[float], go: Optional[float]) -> Optional[float]:
    if ours is None or not go:
        return None
    return round(ours / go, 3)


def loadavg() -> List[float]:
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def git_commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True).stdout.strip()

    commit = git("rev-parse", "HEAD")
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "cni_flannel", "plugins", "packaging")
    return commit + ("-dirty" if dirty else "")


def build_id() -> str:
    try:
        return (REPO / "dist" / "cni" / ".cni-flannel" / "BUILD").read_text().strip()
    except OSError:
        return ""


def fmt(ms: Optional[float]) -> str:
    return "-" if ms is None else (f"{ms:7.1f}" if ms < 1000 else f"{ms:7.0f}")


def fmt_ratio(r: Optional[float]) -> str:
    return "" if r is None else f"({r:.2f}x)"


def table(rows: List[Dict], sides: Sequence[str]) -> str:
    """rows: {"name", "<side>": summary or None, "ratio_<side>": r}; go first, then ours."""
    head = f"{'':<22}" + "".join(f"{s + ' p50/p95 ms (ratio)':>34}" for s in sides) + f"{'cpu p50 ms ' + '/'.join(sides):>26}"
    lines = [head]
    for row in rows:
        cells = []
        cpus = []
        for s in sides:
            cell = row.get(s)
            if cell is None:
                cells.append(f"{'-':>34}")
                cpus.append("-")
                continue
            text = f"{fmt(cell['p50_ms'])} /{fmt(cell['p95_ms'])} {fmt_ratio(row.get('ratio_' + s))}"
            cells.append(f"{text:>34}")
            cpus.append(fmt(cell.get("cpu_p50_ms")).strip())
        lines.append(f"{row['name']:<22}" + "".join(cells) + f"{' / '.join(cpus):>26}")
    return "\n".join(lines)


def nproc() -> int:
    return os.cpu_count() or 0
