"""Fuzzing with hypothesis: strategies for every input the plugins and the daemon read
(strategies.py), the plugin fuzzer that runs inside a test node (plugins.py), and the case
counters `make reliability` reports (CNI_FUZZ_EXAMPLES sets the cases per target)."""
