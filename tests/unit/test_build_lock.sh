#!/usr/bin/env bash
# test_build_lock.sh — two scripted builds of one build directory never overlap (issue #15
# item 15: `cmake --build build -j2` racing another build of the same tree linked a
# half-written object, "undefined reference to main"). build_takod (scripts/setup.sh,
# used by test.sh and run.sh) runs three times at once against a stand-in cmake that
# records when two of its builds overlap; each must wait for the other.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
T=$(mktemp -d /tmp/takod-buildlock.XXXXXX)
trap 'rm -rf "$T"' EXIT
mkdir -p "$T/bin"
cat >"$T/bin/cmake" <<'SH'
#!/bin/bash
[ "$1" = --build ] || exit 0                 # the configure step: nothing to do
mkdir "$FAKE/inside" 2>/dev/null || echo overlap >>"$FAKE/overlaps"
sleep 0.5
rmdir "$FAKE/inside" 2>/dev/null
echo built >>"$FAKE/builds"
SH
chmod +x "$T/bin/cmake"
export FAKE=$T PATH="$T/bin:$PATH" TAKO_BUILD=$T/build
# shellcheck source=scripts/setup.sh
. "$ROOT/scripts/setup.sh"
set +e
(build_takod) 2>/dev/null &
(build_takod) 2>/dev/null &
(build_takod) 2>/dev/null &
wait
builds=$(wc -l <"$T/builds" 2>/dev/null || echo 0)
if [ -s "$T/overlaps" ] || [ "$builds" -ne 3 ]; then
    echo "FAIL: $builds builds, $(wc -l <"$T/overlaps" 2>/dev/null || echo 0) overlapping"
    exit 1
fi
echo "1 passed, 0 failed (3 builds, none overlapping)"
