"""`make demo`: the seed walkthrough (vxlan, host-gw, udp) on three namespace nodes, live.

Run as ``python -m demo.demo`` from the repository root (demo/demo.sh does); see demo/demo.py.
"""
