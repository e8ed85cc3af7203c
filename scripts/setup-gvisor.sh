#!/usr/bin/env bash
# setup-gvisor.sh: gVisor's runsc for docker.runtime = runsc — scripts/setup-runtime.sh runsc
# (see there). Kept under this name because the docs and `tako doctor` point to it.
exec "$(dirname "${BASH_SOURCE[0]}")/setup-runtime.sh" runsc "$@"
