"""Integration-test harness: nodes and pods as namespaces (netns), running
plugins like a runtime (exec), the Go runtime drivers (drivers), the crash-point
hook (crash), plugin locations (plugins) and leftover removal (cleanup)."""
