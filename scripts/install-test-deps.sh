#!/usr/bin/env bash
# Installs the system tools that the tests and benchmarks use, on Debian:
#   nginx (nginx-light where it exists, else nginx), wrk, tmux, podman and runc (the container
#   tests; scripts/container-base.sh then makes the Dockerfile's base image available).
# Idempotent and quiet: when everything is present it only runs a few `command -v`.
# `apt-get update` runs only if an install fails or the package lists are empty.
# Needs root (or sudo) for apt-get. Python packages are not installed here:
# .ci/run does `pip install -e '.[test]'`; the benchmark makes its own venv.
set -euo pipefail

# binary -> package(s); the first package apt can offer wins.
declare -A WANT=(
    [nginx]="nginx-light nginx"
    [wrk]="wrk"
    [tmux]="tmux"
    [podman]="podman"
    [runc]="runc"
)

have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }

missing=()
for bin in "${!WANT[@]}"; do
    have "$bin" || missing+=("$bin")
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
        echo "install-test-deps: need root to install: ${missing[*]}" >&2; exit 1
    fi
fi
export DEBIAN_FRONTEND=noninteractive
APT_OPTS=(-y -qq --no-install-recommends -o Dpkg::Use-Pty=0)

# Never let a package's postinst start a system service (nginx on port 80).
POLICY=/usr/sbin/policy-rc.d
if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$POLICY" >/dev/null
    $SUDO chmod +x "$POLICY"
    trap '$SUDO rm -f "$POLICY"' EXIT
fi

updated=0
apt_update() {
    [ $updated -eq 1 ] && return 0
    $SUDO apt-get update -qq >/dev/null
    updated=1
}
# No package lists at all (fresh image with lists cleaned): update first.
if ! ls /var/lib/apt/lists/*_Packages* >/dev/null 2>&1; then apt_update; fi

pick() {  # first candidate package that apt knows, for binary $1
    local p
    for p in ${WANT[$1]}; do
        # (no grep -q: with pipefail its early exit would fail the pipeline)
        if [[ "$(apt-cache policy "$p" 2>/dev/null)" == *"Candidate: "[0-9]* ]]; then
            echo "$p"; return 0
        fi
    done
    return 1
}

resolve() {
    pkgs=()
    local bin p
    for bin in "${missing[@]}"; do
        if p=$(pick "$bin"); then pkgs+=("$p"); else return 1; fi
    done
}

if ! resolve; then apt_update; resolve || { echo "install-test-deps: no package for: ${missing[*]}" >&2; exit 1; }; fi
echo "install-test-deps: installing ${pkgs[*]}" >&2
# Stale lists give 404s for superseded versions: update once and retry.
if ! $SUDO apt-get install "${APT_OPTS[@]}" "${pkgs[@]}" >/dev/null 2>/tmp/install-test-deps.err; then
    apt_update
    resolve
    $SUDO apt-get install "${APT_OPTS[@]}" "${pkgs[@]}" >/dev/null
fi

for bin in "${missing[@]}"; do
    have "$bin" || { echo "install-test-deps: $bin still missing after install" >&2; exit 1; }
done
