#!/usr/bin/env bash
# run.sh BIN CORPUS SECONDS [libFuzzer args...] — run one harness for SECONDS over its
# checked-in seed corpus (read only: new inputs go to a scratch directory that is removed).
# A crash leaves its input in $TAKO_FUZZ_ARTIFACTS (default /tmp/tako-fuzz-artifacts/) and
# fails. Used by ctest (label fuzz) and scripts/fuzz.sh.
set -euo pipefail
bin=$1 corpus=$2 secs=$3
shift 3
[ -x "$bin" ] || { echo "run.sh: $bin not built"; exit 2; }
[ -d "$corpus" ] || { echo "run.sh: no corpus $corpus"; exit 2; }
art="${TAKO_FUZZ_ARTIFACTS:-/tmp/tako-fuzz-artifacts}/$(basename "$bin")/"
mkdir -p "$art"
work="$(mktemp -d /tmp/tako-fuzz.XXXXXX)"
trap 'rm -rf "$work"' EXIT
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
# -rss_limit_mb and -timeout: a harness that grows or hangs is a finding too
exec "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=1024 -print_final_stats=1 \
    -artifact_prefix="$art" "$@" "$work" "$corpus"
