"""Timing worker: runs *inside* a bench node and execs what the driver asks for.

The driver (driver.py) starts one worker per node through ``nsenter`` (the
node's network and mount namespaces), so every timed process starts directly
from here — no nsenter/ip-netns-exec start-up in the numbers — and sees the
node's own /opt/cni/bin, /etc/cni/net.d, /var/lib/cni and /run/flannel.

Protocol: one JSON object per line on stdin, one JSON reply per line on stdout.
  {"jobs": [{"argv": [...], "env": {...}, "stdin": "...", "executable": "..."}, ...]}
      (stdin and executable optional: default /dev/null and argv[0])
      starts every job at once (one job = a single sample) and waits for all;
      reply {"wall": s, "runs": [{"rc", "out", "err", "wall", "user", "sys"}]}
      where wall is first start -> last exit and user/sys come from wait4
      (the child plus every descendant it waited for: libcni's plugins).
  {"quit": true}

    worker.py TMPDIR   (output files go there; the driver owns and removes it)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Dict, List


def run_jobs(jobs: List[Dict], tmp: str) -> Dict:
    procs = {}
    started = {}
    files = []
    t0 = time.perf_counter()
    for i, job in enumerate(jobs):
        out = open(os.path.join(tmp, f"{i}.out"), "w+b")
        err = open(os.path.join(tmp, f"{i}.err"), "w+b")
        files.append((out, err))
        started[i] = time.perf_counter()
        # No preexec_fn/close_fds quirks: subprocess uses vfork, as cheap as a runtime's exec.
        stdin = subprocess.DEVNULL
        if "stdin" in job:  # bytes for the job's stdin, from a file as a runtime's pipe would hold them
            stdin = open(os.path.join(tmp, f"{i}.in"), "w+b")
            stdin.write(job["stdin"].encode())
            stdin.seek(0)
            files.append((stdin, None))
        p = subprocess.Popen(job["argv"], executable=job.get("executable"), env=job["env"], stdin=stdin,
                             stdout=out, stderr=err, cwd="/")
        procs[p.pid] = (i, p)
    runs: List[Dict] = [{} for _ in jobs]
    end = t0
    while procs:
        pid, status, ru = os.wait4(-1, 0)
        now = time.perf_counter()
        if pid not in procs:
            continue
        i, p = procs.pop(pid)
        p.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        end = now
        runs[i] = {"rc": p.returncode, "wall": now - started[i], "user": ru.ru_utime, "sys": ru.ru_stime}
    i = 0
    for out, err in files:
        if err is None:  # a job's stdin file
            out.close()
            continue
        for key, f in (("out", out), ("err", err)):
            f.seek(0)
            runs[i][key] = f.read().decode(errors="replace")
            f.close()
        i += 1
    for name in os.listdir(tmp):
        os.unlink(os.path.join(tmp, name))
    return {"wall": end - t0, "runs": runs}


def main() -> None:
    # Ctrl-C is the driver's to handle (it tears the nodes down); EOF on stdin ends us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    tmp = sys.argv[1]
    for line in sys.stdin:
        msg = json.loads(line)
        if msg.get("quit"):
            break
        reply = run_jobs(msg["jobs"], tmp)
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
