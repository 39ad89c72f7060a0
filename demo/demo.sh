#!/bin/bash
# make demo: see demo/demo.py.  Needs root (network namespaces); touches only namespaces it creates.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m demo.demo "$@"
