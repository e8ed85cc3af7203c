#!/usr/bin/env bash
# build-image.sh - build takod's executor image (default code-executor:latest)
# entirely offline, from the Debian mirror configured for apt on this machine.
#
#   0. compile the warm-container launcher image/launcher/tako-launcher.c
#      (gcc -static) into a temporary build context, next to a copy of
#      image/Dockerfile; its sha256 decides whether the image is current;
#   1. debootstrap --variant=minbase --include=python3 <codename> into a
#      temporary directory under /var/tmp, slim it, `docker import` it as
#      takod-base:<codename> (cached: skipped when that image already exists);
#   2. `docker build` image/Dockerfile on top of it (no network needed),
#      labelled takod.launcher.sha256=<sha256 of the launcher binary>.
#
# Idempotent: an image whose label matches the freshly compiled launcher is
# left alone; one without it (or with an older launcher) gets its top layer
# rebuilt from the cached base. Run as root (debootstrap needs it). See --help.
#
# --base IMAGE replaces step 1 with an image already in the engine (e.g. one
# `tako setup --registry-base` pulled): no debootstrap, no root needed. --check
# only answers "is NAME current?" (exit 0 yes, 10 no): `tako setup` asks it
# before its preflight checks, so an up-to-date machine never needs debootstrap.
set -euo pipefail

PROG=build-image
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$SCRIPT_DIR/.." && pwd)
IMAGE_DIR="$REPO_DIR/image"
LAUNCHER_SRC="$IMAGE_DIR/launcher/tako-launcher.c"
LAUNCHER_PATH=/usr/local/bin/tako-launcher # in the image
LAUNCHER_LABEL=takod.launcher.sha256
CC=${CC:-gcc}

IMAGE="code-executor:latest"
FORCE=0
MIRROR=""
BASE=""  # --base: build on this image instead of takod-base:<codename>
CHECK=0  # --check: report whether IMAGE is current, build nothing
EXIT_STALE=10 # --check: IMAGE is missing or out of date
WORK_PARENT="${TAKOD_BUILD_TMPDIR:-/var/tmp}"
MIN_FREE_KIB=$((2 * 1024 * 1024)) # 2 GiB

WORK=""      # mktemp dir, removed by cleanup()
BOOT_PID=""  # debootstrap process (group leader), killed by cleanup()
CTX=""       # temporary docker build context, removed by cleanup()
LAUNCHER_SHA=""

usage() {
	cat <<EOF
Usage: $(basename "$0") [--force] [--image NAME] [--mirror URL] [--base IMAGE]
                      [--check] [-h|--help]

Build the takod executor image locally, without network access other than
the Debian mirror configured for apt.

  --force        rebuild everything: re-run debootstrap, re-import the base
                 image takod-base:<codename> and rebuild NAME without cache
  --image NAME   tag of the executor image (default: code-executor:latest)
  --mirror URL   Debian mirror for debootstrap (default: the first mirror of
                 this machine's apt configuration that serves <codename>)
  --base IMAGE   build NAME on IMAGE (already in the engine, with python3,
                 groupadd and useradd, e.g. python:3.11-slim) instead of the
                 debootstrapped takod-base:<codename>; an existing NAME built
                 on another base is rebuilt
  --check        build nothing: exit 0 when NAME is current (as above), $EXIT_STALE
                 when it would be built, 1 on errors
  -h, --help     show this help and exit

The launcher (image/launcher/tako-launcher.c) is always compiled first (\$CC,
default gcc, -static). Without --force, an existing NAME labelled with that
binary's sha256 is left alone (exit 0); an existing NAME without it gets its
top layer rebuilt; an existing takod-base:<codename> is reused instead of
running debootstrap again.
The rootfs is built in a temporary directory under \$TAKOD_BUILD_TMPDIR
(default /var/tmp), which needs at least 2 GiB free.
EOF
}

log() { printf '%s: %s\n' "$PROG" "$*"; }
die() {
	printf '%s: error: %s\n' "$PROG" "$*" >&2
	exit 1
}

# ---------------------------------------------------------------- cleanup

# Unmount whatever debootstrap left mounted under $WORK (proc, sys, bind
# mounted devices...), deepest first, so that rm -rf cannot reach the host.
unmount_under() {
	local dir=$1 mp
	[ -r /proc/self/mountinfo ] || return 0
	awk -v p="$dir/" 'index($5, p) == 1 { print length($5) "\t" $5 }' \
		/proc/self/mountinfo | sort -rn | cut -f2- |
		while IFS= read -r mp; do
			# mountinfo escapes blanks as \040 etc.; printf %b undoes it
			mp=$(printf '%b' "$mp")
			umount "$mp" 2>/dev/null || umount -l "$mp" 2>/dev/null || true
		done
}

cleanup() {
	local rc=$?
	trap - EXIT INT TERM HUP
	if [ -n "$BOOT_PID" ] && kill -0 "$BOOT_PID" 2>/dev/null; then
		log "stopping debootstrap (pid $BOOT_PID)"
		kill -TERM -- "-$BOOT_PID" 2>/dev/null || kill -TERM "$BOOT_PID" 2>/dev/null || true
		wait "$BOOT_PID" 2>/dev/null || true
	fi
	if [ -n "$WORK" ] && [ -d "$WORK" ]; then
		unmount_under "$WORK"
		rm -rf --one-file-system -- "$WORK" ||
			printf '%s: warning: could not remove %s\n' "$PROG" "$WORK" >&2
	fi
	if [ -n "$CTX" ] && [ -d "$CTX" ]; then
		rm -rf -- "$CTX"
	fi
	exit "$rc"
}

on_signal() {
	log "interrupted ($1)"
	# exit status 128+signo; the EXIT trap (cleanup) does the work
	case $1 in
	INT) exit 130 ;;
	HUP) exit 129 ;;
	*) exit 143 ;;
	esac
}

# ---------------------------------------------------------------- helpers

image_exists() { docker image inspect "$1" >/dev/null 2>&1; }
image_id() { docker image inspect --format '{{.Id}}' "$1" 2>/dev/null || true; }
image_label() { # image_label IMAGE KEY: the label's value, empty when unset
	docker image inspect --format "{{index .Config.Labels \"$2\"}}" "$1" 2>/dev/null || true
}

# Remove a now-untagged previous version of an image (after --force).
drop_old_image() {
	local old=$1 new=$2
	if [ -n "$old" ] && [ "$old" != "$new" ]; then
		if [ -z "$(docker image inspect --format '{{join .RepoTags ","}}' "$old" 2>/dev/null)" ]; then
			docker image rm "$old" >/dev/null 2>&1 || true
		fi
	fi
}

# os-release codename of this machine
host_codename() {
	local f codename=""
	for f in /etc/os-release /usr/lib/os-release; do
		if [ -r "$f" ]; then
			codename=$(sed -n 's/^VERSION_CODENAME=//p' "$f" | tr -d '"'"'" | head -n1)
			[ -n "$codename" ] && break
		fi
	done
	[ -n "$codename" ] || die "cannot read VERSION_CODENAME from /etc/os-release"
	printf '%s\n' "$codename"
}

# First URI of an enabled deb822 "Types: deb" stanza whose Suites include
# the codename (or a suite starting with "<codename>-" as a fallback).
mirror_from_deb822() {
	local suite=$1 f
	shift
	for f in "$@"; do
		[ -r "$f" ] || continue
		awk -v want="$suite" '
			function flush(   n, i, t, s, ok, exact, near) {
				sub(/^[ \t]+/, "", types); sub(/^[ \t]+/, "", uris)
				sub(/^[ \t]+/, "", suites)
				if (types != "" && uris != "" && tolower(enabled) != "no") {
					n = split(types, t, /[ \t]+/); ok = 0
					for (i = 1; i <= n; i++) if (t[i] == "deb") ok = 1
					if (ok) {
						n = split(suites, s, /[ \t]+/); exact = near = 0
						for (i = 1; i <= n; i++) {
							if (s[i] == want) exact = 1
							else if (index(s[i], want "-") == 1) near = 1
						}
						split(uris, u, /[ \t]+/)
						if (exact && first == "") first = u[1]
						if (near && second == "") second = u[1]
					}
				}
				types = uris = suites = enabled = ""; key = ""
			}
			/^[ \t]*#/ { next }
			/^[ \t]*$/ { flush(); next }
			/^[ \t]/ {            # continuation line
				line = $0; sub(/^[ \t]+/, "", line)
				if (key == "types") types = types " " line
				else if (key == "uris") uris = uris " " line
				else if (key == "suites") suites = suites " " line
				next
			}
			{
				k = tolower($0); sub(/:.*/, "", k)
				v = $0; sub(/^[^:]*:[ \t]*/, "", v); sub(/[ \t]+$/, "", v)
				key = k
				if (k == "types") types = v
				else if (k == "uris") uris = v
				else if (k == "suites") suites = v
				else if (k == "enabled") enabled = v
			}
			END {
				flush()
				if (first != "") print first; else if (second != "") print second
			}
		' "$f"
	done | head -n1
}

# One-line-style sources: "deb [opts] URI SUITE COMPONENTS...". Prefer a
# line for the codename itself, else the first deb line.
mirror_from_list() {
	local suite=$1
	shift
	local f
	for f in "$@"; do
		[ -r "$f" ] && cat -- "$f"
	done | awk -v want="$suite" '
		{ sub(/#.*/, "") }
		$1 == "deb" {
			i = 2
			if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
			if (i > NF) next
			if ($(i + 1) == want && exact == "") exact = $i
			if (any == "") any = $i
		}
		END { if (exact != "") print exact; else if (any != "") print any }
	'
}

detect_mirror() {
	local suite=$1 m="" f
	local -a sources=() lists=()
	shopt -s nullglob
	for f in /etc/apt/sources.list.d/*.sources; do sources+=("$f"); done
	[ -r /etc/apt/sources.list ] && lists+=(/etc/apt/sources.list)
	for f in /etc/apt/sources.list.d/*.list; do lists+=("$f"); done
	shopt -u nullglob
	if [ "${#sources[@]}" -gt 0 ]; then
		m=$(mirror_from_deb822 "$suite" "${sources[@]}")
	fi
	if [ -z "$m" ] && [ "${#lists[@]}" -gt 0 ]; then
		m=$(mirror_from_list "$suite" "${lists[@]}")
	fi
	printf '%s\n' "${m%/}"
}

# Honour an apt HTTP proxy for debootstrap's wget, unless one is already set.
apt_proxy_env() {
	local p
	if [ -z "${http_proxy:-}" ] && command -v apt-config >/dev/null 2>&1; then
		p=$(apt-config dump 2>/dev/null |
			sed -n 's/^Acquire::http::Proxy "\(.*\)";$/\1/p' | head -n1)
		if [ -n "$p" ] && [ "$p" != "DIRECT" ]; then
			export http_proxy="$p"
			log "using apt's HTTP proxy $p"
		fi
	fi
}

human_size() {
	awk -v b="$1" 'BEGIN {
		split("B KB MB GB TB", u, " "); i = 1
		while (b >= 1000 && i < 5) { b /= 1000; i++ }
		printf (i == 1 ? "%d %s" : "%.1f %s"), b, u[i]
	}'
}

# ---------------------------------------------------------------- stages

# Compile the launcher (static, stripped: the same source and compiler give the
# same bytes) into a fresh build context with a copy of the Dockerfile.
# Sets CTX and LAUNCHER_SHA.
build_launcher() {
	local bin
	[ -f "$LAUNCHER_SRC" ] || die "missing $LAUNCHER_SRC"
	CTX=$(mktemp -d "${TMPDIR:-/tmp}/takod-image-ctx.XXXXXX")
	chmod 0755 "$CTX"
	mkdir -m 0755 "$CTX/launcher"
	bin="$CTX/launcher/tako-launcher"
	"$CC" -std=c11 -static -O2 -s -Wall -Wextra -o "$bin" "$LAUNCHER_SRC" ||
		die "compiling $LAUNCHER_SRC failed (needs $CC and the static libc: apt-get install build-essential)"
	if command -v readelf >/dev/null 2>&1 &&
		readelf -lW "$bin" | grep -q 'program interpreter'; then
		die "$bin is not static"
	fi
	chmod 0755 "$bin"
	cp "$IMAGE_DIR/Dockerfile" "$CTX/Dockerfile"
	LAUNCHER_SHA=$(sha256sum "$bin" | cut -d' ' -f1)
	log "launcher compiled: sha256 $LAUNCHER_SHA ($(human_size "$(stat -c %s "$bin")"))"
}

build_base() {
	local codename=$1 base=$2 rootfs avail old_id new_id rc

	command -v debootstrap >/dev/null 2>&1 ||
		die "debootstrap not found (apt-get install debootstrap)"
	[ "$(id -u)" -eq 0 ] || die "building the base image needs root (debootstrap)"

	if [ -z "$MIRROR" ]; then
		MIRROR=$(detect_mirror "$codename")
		[ -n "$MIRROR" ] ||
			die "no Debian mirror for '$codename' found in /etc/apt/sources.list{,.d/*}; use --mirror URL"
	fi
	case $MIRROR in
	http://* | https://* | ftp://* | file:/*) ;;
	*) die "unsupported mirror URI '$MIRROR' (need http, https, ftp or file); use --mirror URL" ;;
	esac

	[ -d "$WORK_PARENT" ] || die "$WORK_PARENT does not exist"
	avail=$(df -Pk -- "$WORK_PARENT" | awk 'NR == 2 { print $4 }')
	[ -n "$avail" ] || die "cannot determine free space in $WORK_PARENT"
	if [ "$avail" -lt "$MIN_FREE_KIB" ]; then
		die "only $((avail / 1024)) MiB free in $WORK_PARENT; need at least 2 GiB to build the rootfs"
	fi

	WORK=$(mktemp -d "$WORK_PARENT/takod-image.XXXXXX")
	rootfs="$WORK/rootfs"
	mkdir -m 0755 "$rootfs"
	apt_proxy_env

	log "debootstrap $codename from $MIRROR into $rootfs ..."
	local t0=$SECONDS
	# own process group, so cleanup() can stop it and all its children
	setsid debootstrap --variant=minbase --include=python3 \
		"$codename" "$rootfs" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 &
	BOOT_PID=$!
	rc=0
	wait "$BOOT_PID" || rc=$?
	BOOT_PID=""
	if [ "$rc" -ne 0 ]; then
		printf '%s: debootstrap failed (exit %d); last lines of its log:\n' "$PROG" "$rc" >&2
		tail -n 25 "$WORK/debootstrap.log" >&2 || true
		if [ -f "$rootfs/debootstrap/debootstrap.log" ]; then
			printf '%s: ... and of %s:\n' "$PROG" "debootstrap/debootstrap.log" >&2
			tail -n 25 "$rootfs/debootstrap/debootstrap.log" >&2 || true
		fi
		exit 1
	fi
	unmount_under "$WORK"
	log "debootstrap done in $((SECONDS - t0))s"

	[ -x "$rootfs/usr/bin/python3" ] || die "debootstrap did not install python3"

	log "slimming rootfs ($(du -sh --one-file-system "$rootfs" | cut -f1) before) ..."
	rm -f "$rootfs"/var/cache/apt/archives/*.deb \
		"$rootfs"/var/cache/apt/*.bin
	rm -rf "$rootfs"/var/lib/apt/lists/* \
		"$rootfs"/var/cache/apt/archives/partial/* \
		"$rootfs"/var/cache/debconf/*-old \
		"$rootfs"/var/lib/dpkg/*-old \
		"$rootfs"/var/log/* \
		"$rootfs"/usr/share/doc/* \
		"$rootfs"/usr/share/man/* \
		"$rootfs"/usr/share/info/* \
		"$rootfs"/usr/share/lintian \
		"$rootfs"/usr/share/linda \
		"$rootfs"/debootstrap
	if [ -d "$rootfs/usr/share/locale" ]; then
		find "$rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 \
			! -name 'C' ! -name 'C.*' ! -name 'en' ! -name 'en_*' \
			! -name 'locale.alias' -exec rm -rf {} +
	fi
	# docker provides /dev, /proc, /sys, resolv.conf, hostname, hosts at run time
	find "$rootfs/dev" "$rootfs/proc" "$rootfs/sys" -mindepth 1 -maxdepth 1 \
		-exec rm -rf --one-file-system {} + 2>/dev/null || true
	: >"$rootfs/etc/resolv.conf"
	: >"$rootfs/etc/hostname"
	# keep later package installs (if anyone makes some) slim as well
	mkdir -p "$rootfs/etc/dpkg/dpkg.cfg.d"
	cat >"$rootfs/etc/dpkg/dpkg.cfg.d/takod-slim" <<'EOF'
# takod: no docs, man pages or foreign locales in the executor image
path-exclude=/usr/share/doc/*
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
path-include=/usr/share/locale/locale.alias
path-include=/usr/share/locale/en*
EOF
	log "rootfs is $(du -sh --one-file-system "$rootfs" | cut -f1) after slimming"

	old_id=$(image_id "$base")
	log "importing rootfs as $base ..."
	tar --numeric-owner --xattrs -C "$rootfs" -cf - . |
		docker import \
			--change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
			--change 'ENV LANG=C.UTF-8' \
			--change 'CMD ["python3"]' \
			--change "LABEL org.opencontainers.image.title=takod-base org.opencontainers.image.version=$codename" \
			--message "debootstrap --variant=minbase --include=python3 $codename $MIRROR" \
			- "$base" >/dev/null
	new_id=$(image_id "$base")
	[ -n "$new_id" ] || die "docker import did not produce $base"
	drop_old_image "$old_id" "$new_id"
	log "base image $base: $new_id"

	# rootfs no longer needed: free the space now rather than at exit
	rm -rf --one-file-system -- "$WORK"
	WORK=""
}

build_executor() {
	local base=$1 old_id new_id size
	local -a extra=()
	[ -f "$IMAGE_DIR/Dockerfile" ] || die "missing $IMAGE_DIR/Dockerfile"
	[ "$FORCE" -eq 1 ] && extra+=(--no-cache)

	old_id=$(image_id "$IMAGE")
	# the Python version, as a label takod reports in GET /job-types
	local pyver
	pyver=$(timeout 120 docker run --rm --network none "$base" \
		python3 -c 'import platform; print(platform.python_version())') ||
		die "python3 does not run in $base"
	log "docker build $IMAGE from $base (python $pyver) ..."
	# legacy builder (docker.io 20.10); no network needed nor allowed. The
	# context is $CTX (Dockerfile + launcher/tako-launcher); its cache reuses
	# every layer below the launcher's COPY.
	DOCKER_BUILDKIT=0 docker build \
		--network none \
		--build-arg "BASE_IMAGE=$base" \
		--label "org.opencontainers.image.base.name=$base" \
		--label "$LAUNCHER_LABEL=$LAUNCHER_SHA" \
		--label "takod.python_version=$pyver" \
		-t "$IMAGE" "${extra[@]}" \
		-f "$CTX/Dockerfile" "$CTX"
	new_id=$(image_id "$IMAGE")
	[ -n "$new_id" ] || die "docker build did not produce $IMAGE"
	drop_old_image "$old_id" "$new_id"
	rm -rf -- "$CTX"
	CTX=""

	[ "$(image_label "$IMAGE" "$LAUNCHER_LABEL")" = "$LAUNCHER_SHA" ] ||
		die "$IMAGE lacks the label $LAUNCHER_LABEL=$LAUNCHER_SHA"
	docker run --rm --network none --user 1000:1000 "$IMAGE" "$LAUNCHER_PATH" --version \
		>/dev/null || die "$LAUNCHER_PATH does not run in $IMAGE"

	size=$(docker image inspect --format '{{.Size}}' "$IMAGE")
	log "built $IMAGE"
	log "image id: $new_id"
	log "size: $(human_size "$size") ($size bytes)"
}

# With --base, an existing IMAGE counts as current only when it was built on
# that base (build_executor labels the base's name); without it, any base does.
base_matches() {
	[ -z "$BASE" ] ||
		[ "$(image_label "$IMAGE" org.opencontainers.image.base.name)" = "$BASE" ]
}

# ---------------------------------------------------------------- main

main() {
	while [ $# -gt 0 ]; do
		case $1 in
		--force) FORCE=1 ;;
		--image)
			[ -n "${2:-}" ] || die "--image needs a NAME"
			IMAGE=$2
			shift
			;;
		--image=*)
			IMAGE=${1#--image=}
			[ -n "$IMAGE" ] || die "--image needs a NAME"
			;;
		--mirror)
			[ -n "${2:-}" ] || die "--mirror needs a URL"
			MIRROR=${2%/}
			shift
			;;
		--mirror=*)
			MIRROR=${1#--mirror=}
			MIRROR=${MIRROR%/}
			[ -n "$MIRROR" ] || die "--mirror needs a URL"
			;;
		--base)
			[ -n "${2:-}" ] || die "--base needs an IMAGE"
			BASE=$2
			shift
			;;
		--base=*)
			BASE=${1#--base=}
			[ -n "$BASE" ] || die "--base needs an IMAGE"
			;;
		--check) CHECK=1 ;;
		-h | --help)
			usage
			exit 0
			;;
		*)
			usage >&2
			die "unknown argument: $1"
			;;
		esac
		shift
	done

	trap cleanup EXIT
	trap 'on_signal INT' INT
	trap 'on_signal TERM' TERM
	trap 'on_signal HUP' HUP

	command -v docker >/dev/null 2>&1 || die "docker CLI not found (apt-get install docker.io)"
	local err
	if ! err=$(docker info 2>&1 >/dev/null); then
		printf '%s\n' "$err" | tail -n 3 >&2
		die "no docker engine answering (is dockerd running? DOCKER_HOST=${DOCKER_HOST:-unset})"
	fi

	if [ -n "$BASE" ] && ! image_exists "$BASE"; then
		[ "$CHECK" -eq 1 ] || die "base image $BASE is not in the engine (docker pull it first)"
	fi

	if [ "$CHECK" -eq 1 ] && [ "$FORCE" -eq 1 ]; then
		log "--force: $IMAGE would be rebuilt"
		exit "$EXIT_STALE"
	fi
	local have=""
	if [ "$FORCE" -eq 0 ] && image_exists "$IMAGE"; then
		have=$(image_label "$IMAGE" "$LAUNCHER_LABEL")
		if [ -n "$have" ] && ! command -v "$CC" >/dev/null 2>&1 && base_matches; then
			log "warning: $CC not found, cannot check the launcher of $IMAGE; keeping it"
			exit 0
		fi
	fi
	build_launcher
	if [ "$FORCE" -eq 0 ] && image_exists "$IMAGE"; then
		if [ "$have" = "$LAUNCHER_SHA" ] && [ -n "$(image_label "$IMAGE" takod.python_version)" ] &&
			base_matches; then
			log "$IMAGE already exists ($(image_id "$IMAGE")) with this launcher; nothing to do (use --force to rebuild)"
			exit 0
		fi
		if ! base_matches; then
			log "$IMAGE was built on $(image_label "$IMAGE" org.opencontainers.image.base.name), not $BASE: it will be rebuilt"
		else
			log "$IMAGE lacks this launcher ($LAUNCHER_LABEL=${have:-unset}): its top layer will be rebuilt"
		fi
	elif [ "$FORCE" -eq 0 ]; then
		log "$IMAGE does not exist yet"
	fi
	[ "$CHECK" -eq 1 ] && exit "$EXIT_STALE"

	local codename base t0=$SECONDS
	if [ -n "$BASE" ]; then
		base=$BASE
		log "using base image $base ($(image_id "$base")); no debootstrap"
	else
		codename=$(host_codename)
		base="takod-base:$codename"
		if [ "$FORCE" -eq 0 ] && image_exists "$base"; then
			log "reusing cached base image $base ($(image_id "$base"))"
		else
			build_base "$codename" "$base"
		fi
	fi
	build_executor "$base"
	log "done in $((SECONDS - t0))s"
}

main "$@"
