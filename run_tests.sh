#!/usr/bin/env bash
# Runs pytest once per workspace member (the per-service CI shape) and fails if any fails.
# The local stack is brought up once and reused; it is left running (`make down` stops it).
#   ./run_tests.sh            every member, fault-injection tests excluded
#   ./run_tests.sh --chaos    only the fault-injection suite (pytest -m chaos)
#   ./run_tests.sh -- -k api  extra pytest arguments after --
set -uo pipefail
cd "$(dirname "$0")"
export PATH="$HOME/.local/bin:$PATH"  # where scripts/sync-venv installs uv if it must

marker="not chaos"
members=(shared services/prequal-api services/credit-service services/decision-service tools/devstack)
extra=()
while (($#)); do
    case "$1" in
        --chaos) marker="chaos"; members=(tests/chaos) ;;
        --) shift; extra=("$@"); break ;;
        *) extra+=("$1") ;;
    esac
    shift
done

if [ "${PREQUAL_TEST_BACKEND:-devstack}" = testcontainers ]; then
    # Each pytest starts its servers in containers and the services against them.
    echo "run_tests: servers in containers (testcontainers), not the local stack's"
else
    scripts/devstack up || { echo "run_tests: the local stack did not start" >&2; exit 1; }
fi

results="$(mktemp -d)"
failed=()
for member in "${members[@]}"; do
    echo "=== pytest ${member}"
    started=$SECONDS
    uv run --frozen pytest "$member" -m "$marker" --junitxml="$results/$(echo "$member" | tr / -).xml" "${extra[@]}"
    code=$?
    echo "=== ${member}: exit ${code} in $((SECONDS - started))s"
    # 5 = no tests collected for this marker: only a failure when nothing at all was run
    if [ "$code" -ne 0 ] && [ "$code" -ne 5 ]; then failed+=("$member"); fi
done

uv run --frozen python - "$results" <<'PY'
import glob, sys, xml.etree.ElementTree as ET
total = failed = skipped = 0
for path in glob.glob(sys.argv[1] + "/*.xml"):
    for suite in ET.parse(path).getroot().iter("testsuite"):
        total += int(suite.get("tests", 0))
        failed += int(suite.get("failures", 0)) + int(suite.get("errors", 0))
        skipped += int(suite.get("skipped", 0))
print(f"all members: {total - failed - skipped} passed, {failed} failed, {skipped} skipped")
if skipped:
    print("run_tests: a skipped test is a test that checks nothing; none may be left", file=sys.stderr)
if total == 0 or skipped:
    sys.exit(1)
PY
summary=$?
rm -rf "$results"

if ((${#failed[@]})); then
    echo "FAILED: ${failed[*]}" >&2
    exit 1
fi
exit $summary
