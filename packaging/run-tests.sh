#!/bin/bash
# Run the unit and integration suites (`make test`) and print the counts.
#
# Exit status: 0 only when every suite that ran passed and at least one test ran in total.
# pytest's exit 5 ("no tests collected") is accepted for one directory only when the other one
# ran tests, so an empty or broken collection can neither pass silently nor fail spuriously.
# Extra pytest arguments can be given in PYTEST_ARGS (e.g. PYTEST_ARGS="-x -k loopback").
set -uo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
PY=$root/.venv/bin/python
reports=$(mktemp -d)
trap 'rm -rf "$reports"' EXIT

if [[ $(id -u) != 0 ]]; then
    echo "make test: the integration suite needs root (network namespaces)" >&2
    exit 1
fi

# Integration tests fail instead of skipping when `ip netns add` does not work: an
# "OK" with every one of them skipped would claim what nothing checked.
export CNI_TEST_REQUIRE_NETNS=1

declare -A rc
for suite in unit integration; do
    echo "=== tests/$suite"
    # shellcheck disable=SC2086
    "$PY" -m pytest -q -p no:cacheprovider --timeout=300 \
        --junitxml="$reports/$suite.xml" ${PYTEST_ARGS:-} "tests/$suite"
    rc[$suite]=$?
done

# Counts from the JUnit reports (pytest's own summary line is not meant to be parsed).
summary=$("$PY" - "$reports" <<'EOF'
import os, sys
import xml.etree.ElementTree as ET
total = total_passed = total_failed = total_skipped = 0
for suite in ("unit", "integration"):
    path = os.path.join(sys.argv[1], suite + ".xml")
    counts = dict(tests=0, failures=0, errors=0, skipped=0)
    if os.path.exists(path):
        for ts in ET.parse(path).getroot().iter("testsuite"):
            for key in counts:
                counts[key] += int(ts.get(key, 0))
    passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    total += counts["tests"]
    total_passed += passed
    total_failed += counts["failures"] + counts["errors"]
    total_skipped += counts["skipped"]
    print(f"{suite}: {counts['tests']} tests, {passed} passed, {counts['failures']} failed, "
          f"{counts['errors']} errors, {counts['skipped']} skipped/xfailed")
print(f"total: {total} tests")
print(f"{total_passed} passed, {total_failed} failed, {total_skipped} skipped")
EOF
) || summary="(could not read the test reports)"

echo "=== make test summary"
echo "$summary"

unit=${rc[unit]} integration=${rc[integration]}
status=0
if [[ $unit == 5 && $integration == 5 ]]; then
    echo "make test: FAILED — no tests were collected at all" >&2
    status=1
elif [[ ($unit == 0 || $unit == 5) && ($integration == 0 || $integration == 5) ]]; then
    [[ $unit == 5 ]] && echo "make test: note: tests/unit collected no tests"
    [[ $integration == 5 ]] && echo "make test: note: tests/integration collected no tests"
    echo "make test: OK"
else
    echo "make test: FAILED (pytest exit codes: unit=$unit integration=$integration)" >&2
    status=1
fi
exit $status
