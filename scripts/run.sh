#!/usr/bin/env bash
# run.sh — set up what is missing, then run takod in the foreground on conf/tako.conf.
# Extra arguments go to takod: ./scripts/run.sh -o server.listen=127.0.0.1:9000
set -euo pipefail
# shellcheck source=scripts/setup.sh
. "$(dirname "$0")/setup.sh"
tako_setup
exec "$TAKO_BUILD/takod" -c "$TAKO_ROOT/conf/tako.conf" "$@"
