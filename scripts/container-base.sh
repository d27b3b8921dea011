#!/usr/bin/env bash
# Makes podman able to build and run the project's Dockerfile, for tests/test_container.py.
#
#   ./scripts/container-base.sh        (./scripts/test runs it; needs root for the first two steps)
#
# 1. podman and runc from Debian, if missing (scripts/install-test-deps.sh installs them too).
# 2. The OCI runtime: podman's default (crun) cannot create containers on hosts with a hybrid
#    cgroup layout; there runc can, so runc becomes podman's runtime, with explicit ulimits
#    (such hosts also refuse to raise the process limits a container asks for by default).
# 3. The base image of the Dockerfile's FROM: pulled as anywhere. Only where it cannot be
#    pulled (no registry reachable) is a stand-in built: Debian minbase with python3, pip and
#    venv, from the Debian mirror apt already uses, tagged with the FROM name. The Dockerfile
#    does not depend on which Python path or minor version the base has.
# Idempotent: when everything is in place it only asks podman a few questions.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf 'container-base: %s\n' "$*" >&2; }

BASE=$(awk 'toupper($1) == "FROM" {print $2; exit}' Dockerfile)
case "$BASE" in */*) ;; *) BASE="docker.io/library/$BASE" ;; esac

SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi

if ! command -v podman >/dev/null 2>&1; then
    say "installing podman and runc from Debian"
    $SUDO apt-get update -qq >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends podman runc >/dev/null
fi

# A container that cannot start with the default runtime: try runc, and keep it if it works.
runtime_works() { podman run --rm --pull=never "$@" "$BASE" true >/dev/null 2>&1; }

if ! podman image exists "$BASE"; then
    if podman pull -q "$BASE" >/dev/null 2>&1; then
        say "pulled $BASE"
    else
        say "cannot pull $BASE (no registry reachable?): building a stand-in from Debian"
        command -v debootstrap >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq debootstrap >/dev/null
        mirror=$(grep -h -E '^(URIs:|deb )' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null \
                 | grep -v -i security \
                 | sed -E 's/^URIs:[[:space:]]*//; s/^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?//' \
                 | awk '{print $1}' | grep -m1 -i debian || true)
        [ -n "$mirror" ] || { say "no Debian mirror in the apt configuration: cannot build a stand-in"; exit 1; }
        suite=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
        root=$(mktemp -d /tmp/emperor-base.XXXXXX)
        trap 'rm -rf "$root"' EXIT
        $SUDO debootstrap --variant=minbase --include=python3,python3-pip,python3-venv,ca-certificates \
            "$suite" "$root" "$mirror" >/dev/null
        # pip inside RUN goes through whatever proxy the host uses: trust what the host trusts
        $SUDO cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/" 2>/dev/null || true
        $SUDO chroot "$root" update-ca-certificates >/dev/null 2>&1 || true
        printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' | $SUDO tee "$root/etc/pip.conf" >/dev/null
        $SUDO rm -rf "$root"/usr/lib/python3*/EXTERNALLY-MANAGED "$root"/var/lib/apt/lists/* \
            "$root"/var/cache/apt/archives/*.deb
        $SUDO tar -C "$root" -c . | podman import -q --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$BASE" >/dev/null
        say "built a stand-in for $BASE"
    fi
fi

if ! runtime_works; then
    conf=/etc/containers/containers.conf
    if command -v runc >/dev/null 2>&1 && runtime_works --runtime runc --ulimit nofile=20000:20000 --ulimit nproc=32768:32768; then
        say "the default OCI runtime cannot start a container here; runc can: writing $conf"
        $SUDO mkdir -p /etc/containers
        printf '[containers]\ndefault_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]\n[engine]\nruntime = "runc"\n' \
            | $SUDO tee "$conf" >/dev/null
    else
        say "podman cannot start a container on this machine (tried its default runtime and runc)"
        exit 1
    fi
fi
say "ready: $BASE"
