#!/usr/bin/env bash
# test.sh — set up what is missing, then run the whole suite with ctest: unit tests
# (plain and ASan+UBSan) and integration tests against the real takod, dockerd and
# PostgreSQL. Extra arguments go to ctest (e.g. -R integration -V).
set -euo pipefail
# shellcheck source=scripts/setup.sh
. "$(dirname "$0")/setup.sh"
tako_setup
cd "$TAKO_BUILD"
# -j2: the unit tests and the fuzz harnesses run two at a time; every integration test is
# RUN_SERIAL (it runs alone), so the machine's two cores are never shared between them
exec ctest --output-on-failure --timeout 900 -j2 "$@"
