#!/usr/bin/env bash
# check-format.sh — every C source and header must match .clang-format (run by ctest as
# style.clang_format). `scripts/check-format.sh --fix` rewrites them instead.
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t files < <(find common master workers include tests/unit tests/fuzz bench clients image \
    -name '*.[ch]' 2>/dev/null | sort)
if [ "${1:-}" = "--fix" ]; then
    clang-format -i "${files[@]}"
    exit 0
fi
bad=0
for f in "${files[@]}"; do
    if ! clang-format --dry-run --Werror "$f" >/dev/null 2>&1; then
        echo "not clang-formatted: $f (scripts/check-format.sh --fix)"
        bad=$((bad + 1))
    fi
done
echo "$(( ${#files[@]} - bad )) passed, $bad failed"
[ "$bad" = 0 ]
