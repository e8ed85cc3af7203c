#!/usr/bin/env bash
# test.sh — set up what is missing, then run the whole suite with ctest: unit tests
# (plain and ASan+UBSan) and integration tests against the real takod, dockerd and
# PostgreSQL. Extra arguments go to ctest (e.g. -R integration -V).
set -euo pipefail
# shellcheck source=scripts/setup.sh
. "$(dirname "$0")/setup.sh"
tako_setup
cd "$TAKO_BUILD"
exec ctest --output-on-failure --timeout 900 "$@"
