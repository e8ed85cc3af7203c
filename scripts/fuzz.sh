#!/usr/bin/env bash
# fuzz.sh NAME SECONDS [libFuzzer args...] — run one libFuzzer harness (tests/fuzz/NAME.c,
# e.g. fuzz_http) for SECONDS over its seed corpus, at low priority. Builds build/fuzz first
# (the top-level build with TAKO_FUZZ=ON, the default when clang links a fuzzer).
# `fuzz.sh list` names the harnesses. A crash's input lands in $TAKO_FUZZ_ARTIFACTS
# (default /tmp/tako-fuzz-artifacts/NAME/): fix the bug, then add the input to
# tests/fuzz/corpus/NAME/ as regress-WHAT so every later run replays it.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${TAKO_BUILD:-$root/build}"
if [ "${1:-}" = list ] || [ $# -lt 2 ]; then
    [ "${1:-}" = list ] || echo "usage: $0 NAME SECONDS [libFuzzer args...]" >&2
    for f in "$root"/tests/fuzz/fuzz_*.c; do basename "$f" .c; done
    [ "${1:-}" = list ]
    exit
fi
name=$1 secs=$2
shift 2
[ -f "$root/tests/fuzz/$name.c" ] || { echo "fuzz.sh: no harness tests/fuzz/$name.c" >&2; exit 2; }
mkdir -p "$build"
exec {lock}>"$build/.build-lock" # one build of a tree at a time (setup.sh, build_takod)
flock "$lock"
if [ ! -f "$build/CMakeCache.txt" ]; then
    cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
fi
cmake --build "$build" --target tako_fuzz -j"$(nproc)" >/dev/null
exec {lock}>&-
exec nice -n 10 bash "$root/tests/fuzz/run.sh" "$build/fuzz/$name" \
    "$root/tests/fuzz/corpus/$name" "$secs" "$@"
