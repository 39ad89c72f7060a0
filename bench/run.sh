#!/bin/bash
# make bench: our frozen plugins vs Debian's Go reference, in test namespaces. See bench/README.md.
#
#   bench/run.sh            full run (~30 samples per operation, 3 parallel rounds; a few minutes)
#   bench/run.sh --quick    about a minute (8 samples, 1 parallel round)
#   bench/run.sh --profile  only the profile of one in-process seed-chain ADD (bench/results/profile/)
#   bench/run.sh --agent-profile [N]  the seed chain through the agent: per-request times, cProfile
#   bench/run.sh --udp [..] only the udp backend's data plane vs vxlan/host-gw/veth (bench/udp/bench_udp.py)
#   bench/run.sh --kube-scale [..]  flanneld --kube-subnet-mgr joining 2,000 Nodes (bench/daemon/kube_scale.py)
#   bench/run.sh --scale [..]  flanneld (etcd) joining 2,000 leases, then 1,000 deleted (bench/daemon/scale.py;
#                          the full run includes it: bench/results/daemon_scale.json)
#   (the full run and --quick end with the udp bench: bench/results/udp.json, udp-quick.json)
#   other options go to bench/chain/driver.py (--samples N --rounds N --parallel N --out FILE)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
PY=$root/.venv/bin/python

[[ $(id -u) == 0 ]] || { echo "bench: run as root (it creates network namespaces)" >&2; exit 2; }
[[ -x $PY ]] || { echo "bench: $PY missing: run 'make deps'" >&2; exit 2; }
# make bench builds these first; when run by hand, say what is missing instead of building.
[[ -x dist/cni/flannel && -d dist/cni/.cni-flannel ]] || { echo "bench: dist/cni missing: run 'make binaries'" >&2; exit 2; }
[[ -x tests/drivers/bin/cnitool-libcni ]] || { echo "bench: cnitool-libcni missing: run 'make drivers'" >&2; exit 2; }

if [[ ${1:-} == --agent-profile ]]; then
    shift
    exec "$PY" bench/chain/agent_profile.py "$@"
fi
if [[ ${1:-} == --profile ]]; then
    shift
    exec "$PY" bench/chain/profiling.py "$@"
fi
if [[ ${1:-} == --kube-scale ]]; then
    shift
    exec "$PY" bench/daemon/kube_scale.py "$@"
fi
if [[ ${1:-} == --scale ]]; then
    shift
    exec "$PY" bench/daemon/scale.py "$@"
fi
if [[ ${1:-} == --udp ]]; then
    shift
    exec "$PY" bench/udp/bench_udp.py "$@"
fi
"$PY" bench/chain/driver.py "$@"
[[ -n "$*" ]] || "$PY" bench/daemon/scale.py
case "$*" in
    "") exec "$PY" bench/udp/bench_udp.py --profile ;;
    --quick) exec "$PY" bench/udp/bench_udp.py --quick --out bench/results/udp-quick.json ;;
esac
