#!/usr/bin/env bash
# setup.sh — everything scripts/run.sh and scripts/test.sh need before takod can run, on
# a fresh Debian machine as root. Idempotent: each step checks before it acts.
#   1. Debian packages that are missing (apt-get)
#   2. build (cmake) into build/
#   3. a Docker engine that answers (starts dockerd if none does, and waits for it)
#   4. the executor image (`tako setup`: scripts/build-image.sh, only if missing or stale)
#   5. the container runtimes crun and runsc, registered with the engine
# Sourced by run.sh and test.sh; can also be run alone.
set -euo pipefail

TAKO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TAKO_BUILD="${TAKO_BUILD:-$TAKO_ROOT/build}"

say() { echo "setup: $*" >&2; }

need_root() {
    if [ "$(id -u)" != 0 ]; then
        say "run this as root (it installs packages and starts the Docker engine)"
        exit 1
    fi
}

PACKAGES=(build-essential cmake pkg-config libevent-dev libjansson-dev libpq-dev libseccomp-dev
          libcurl4-openssl-dev libssl-dev docker.io postgresql postgresql-client
          debootstrap python3 curl ca-certificates clang-format runsc crun spin
          python3-pytest clang libfuzzer-14-dev haproxy)

install_packages() {
    local missing=()
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
            missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        say "installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q >/dev/null
        apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

# One build of a build directory at a time: two makes in one tree write the same objects
# and archives, and a link then reads one half-written ("undefined reference to main",
# "Bus error"). Every script that builds (test.sh, run.sh, setup.sh, fuzz.sh) holds
# $TAKO_BUILD/.build-lock (flock) while it configures and builds.
build_takod() {
    say "building takod in $TAKO_BUILD"
    mkdir -p "$TAKO_BUILD"
    local lock
    exec {lock}>"$TAKO_BUILD/.build-lock"
    flock "$lock"
    cmake -S "$TAKO_ROOT" -B "$TAKO_BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
    cmake --build "$TAKO_BUILD" -j"$(nproc)" >/dev/null
    exec {lock}>&-
}

docker_answers() {
    curl -sf --max-time 2 --unix-socket /var/run/docker.sock http://localhost/_ping >/dev/null 2>&1
}

start_docker() {
    if docker_answers; then
        return 0
    fi
    local dockerd
    dockerd="$(command -v dockerd || echo /usr/sbin/dockerd)"
    say "no Docker engine answers; starting $dockerd"
    nohup "$dockerd" >/var/log/takod-dockerd.log 2>&1 &
    for _ in $(seq 1 120); do
        if docker_answers; then
            say "Docker engine is up"
            return 0
        fi
        sleep 0.5
    done
    say "dockerd did not come up in 60 s; see /var/log/takod-dockerd.log"
    tail -20 /var/log/takod-dockerd.log >&2 || true
    exit 1
}

# `tako setup` checks the engine, disk space and debootstrap first, then runs
# scripts/build-image.sh of this tree (which does nothing when the image is current), on the
# same configuration run.sh gives takod (its docker.socket and docker.image).
build_image() {
    TAKO_SOURCE_DIR="$TAKO_ROOT" "$TAKO_BUILD/tako" setup -c "$TAKO_ROOT/conf/tako.conf"
}

# The runtimes registered with the engine: crun (what docker.runtime = auto picks; if it
# cannot be made to work here, takod uses runc and says so), and gVisor's runsc for
# docker.runtime = runsc and its tests.
setup_runtimes() {
    "$TAKO_ROOT/scripts/setup-runtime.sh" crun ||
        say "crun is not usable here (above); takod will use runc"
    "$TAKO_ROOT/scripts/setup-runtime.sh" runsc
}

tako_setup() {
    need_root
    install_packages
    build_takod
    start_docker
    build_image
    setup_runtimes
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    tako_setup
fi
