#!/usr/bin/env bash
# check.sh — model-check tests/model/ring_repair.pml (the ring's push/pop + intent record +
# crash repair protocol) with spin. Exits non-zero on any error. Run by ctest as
# model.ring_repair when spin is installed (apt-get install spin); takes well under a
# minute on 2 cores.
#
#   A  2 producers (2 + 1 values, so the 2-cell ring laps), 1 consumer; any one of the
#      three dies at any step: safety (assertions, no deadlock) and liveness (LTL `done`,
#      every run completes; no fairness assumption needed).
#   B  2 consumers racing, producer 0 pushing 2 values; either consumer dies at any step:
#      safety and liveness.
#   A and B again with -DBUGGY (ring_repair() as it was before the fix): spin must find an
#   error in each, which shows that the model can see the bug the fix removed.
#
# A and B run side by side (two pan processes, ~0.7 GB each). SPIN and CC may name other
# binaries; KEEP=1 keeps the work directory (trails, pan.c, logs).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
spin="${SPIN:-spin}"
cc="${CC:-cc}"
command -v "$spin" >/dev/null || { echo "check.sh: $spin not found"; exit 2; }
command -v "$cc" >/dev/null || { echo "check.sh: $cc not found"; exit 2; }
work="$(mktemp -d /tmp/ring_repair_model.XXXXXX)"
if [ "${KEEP:-0}" != 1 ]; then trap 'rm -rf "$work"' EXIT; fi
cp "$here/ring_repair.pml" "$work/"
cd "$work"

A=()
B=(-DNCONS=2 -DVALS0=2 -DVALS1=0 -DCONSUMER_DEATHS_ONLY)
# run NAME EXPECT(ok|error) MODE(safety|ltl) SPIN_DEFINES...: writes $work/NAME/report
# (its lines for the output) and $work/NAME/verdict (ok or FAIL).
run() {
    local name=$1 expect=$2 mode=$3
    shift 3
    local dir="$work/$name" ccflags pflags
    mkdir -p "$dir"
    cp ring_repair.pml "$dir/"
    if [ "$mode" = safety ]; then
        ccflags=(-DNOCLAIM -DSAFETY)
        pflags=(-m1000000)
    else
        ccflags=()
        pflags=(-a -m1000000)
    fi
    local t0=$SECONDS
    exec >"$dir/report" 2>&1
    (cd "$dir" && "$spin" "$@" -a ring_repair.pml >spin.log 2>&1 &&
        "$cc" -O2 -w "${ccflags[@]}" -o pan pan.c >cc.log 2>&1 &&
        ./pan "${pflags[@]}" >pan.log 2>&1) || true
    local log="$dir/pan.log"
    local errors states secs
    errors=$(sed -n 's/.*errors: \([0-9]*\).*/\1/p' "$log" 2>/dev/null | tail -1)
    states=$(sed -n 's/^ *\([0-9.e+]*\) states, stored.*/\1/p' "$log" 2>/dev/null | tail -1)
    secs=$(sed -n 's/^pan: elapsed time \([0-9.]*\) seconds/\1/p' "$log" 2>/dev/null | tail -1)
    local verdict=FAIL
    if [ -z "$errors" ]; then
        echo "  $name: spin/cc/pan did not run to the end:"
        tail -5 "$dir/spin.log" "$dir/cc.log" "$log" 2>/dev/null | sed 's/^/    /'
    elif grep -q "max search depth too small\|Search not completed" "$log" &&
        [ "$expect" = ok ]; then
        echo "  $name: incomplete search"
    elif [ "$expect" = ok ] && [ "$errors" = 0 ]; then
        verdict=ok
    elif [ "$expect" = error ] && [ "$errors" != 0 ]; then
        verdict=ok
        grep -m1 "^pan:1:" "$log" | sed 's/^/    found (as it must): /'
    else
        grep "^pan:1:" "$log" | sed 's/^/    /'
        (cd "$dir" && "$spin" "$@" -t ring_repair.pml 2>&1 | tail -20 | sed 's/^/    /') || true
    fi
    printf '%-4s %-17s %-6s states %-10s pan %5ss (with spin+cc %ss)\n' "$verdict" "$name" \
        "$mode" "${states:-?}" "${secs:-?}" "$((SECONDS - t0))"
    echo "$verdict" >"$dir/verdict"
}

t0=$SECONDS
(run A.safety ok safety "${A[@]}"; run A.liveness ok ltl "${A[@]}"
 run A.buggy_repair error safety -DBUGGY "${A[@]}") &
(run B.safety ok safety "${B[@]}"; run B.liveness ok ltl "${B[@]}"
 run B.buggy_repair error safety -DBUGGY "${B[@]}") &
wait
passed=0
failed=0
for name in A.safety A.liveness B.safety B.liveness A.buggy_repair B.buggy_repair; do
    cat "$work/$name/report" 2>/dev/null || echo "FAIL $name: no report"
    if [ "$(cat "$work/$name/verdict" 2>/dev/null)" = ok ]; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
    fi
done
echo "model.ring_repair: $((SECONDS - t0)) s"
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
