#!/bin/sh
# SPDX-License-Identifier: MIT
# build-deb.sh - build the relayguard .deb from this checkout (Debian 12) and lint it.
#
# Installs the packaging tools and debian/control's Build-Depends when missing (idempotent:
# apt-get runs only then; needs root or sudo), runs dpkg-buildpackage -us -uc -b in the repo
# root (unit tests included), cleans the tree again, and runs lintian on the result. The .deb,
# .buildinfo and .changes go to the parent directory, as dpkg-buildpackage puts them, or to
# $RELAYGUARD_DEB_OUTDIR. $RELAYGUARD_JOBS sets the build's parallelism (default: all cores).
set -eu
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
updated=""

# apt_install PKG... - install the packages not installed yet; nothing when all are.
apt_install() {
    missing=""
    for p in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
            missing="$missing $p"
        fi
    done
    [ -z "$missing" ] && return 0
    echo "build-deb: installing:$missing" >&2
    if [ -z "$updated" ]; then $SUDO apt-get update -qq; updated=1; fi
    # shellcheck disable=SC2086
    $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
}

# The tools; then Build-Depends, read from debian/control (apt-get build-dep understands a
# source directory), only if dpkg-checkbuilddeps finds some unmet.
apt_install build-essential dpkg-dev debhelper lintian
if ! dpkg-checkbuilddeps >/dev/null 2>&1; then
    echo "build-deb: installing the Build-Depends of debian/control" >&2
    if [ -z "$updated" ]; then $SUDO apt-get update -qq; updated=1; fi
    $SUDO apt-get build-dep -y -qq --no-install-recommends ./ >/dev/null
fi

version="$(dpkg-parsechangelog -S Version)"
arch="$(dpkg-architecture -q DEB_HOST_ARCH)"
changes="../relayguard_${version}_${arch}.changes"

jobs="${RELAYGUARD_JOBS:-$(nproc)}"
# -b: binary only (a native package's source is the checkout). No fakeroot needed:
# debian/control says Rules-Requires-Root: no.
dpkg-buildpackage -us -uc -b -j"$jobs"

# Back to a clean tree: debian/build (the CMake build), debian/relayguard, debhelper's state.
debian/rules clean >/dev/null

# lintian exits non-zero on errors only; warnings and info are shown.
status=0
lintian --display-info "$changes" || status=$?

files="$(sed -n '/^Files:/,$p' "$changes" | awk 'NF == 5 { print $5 }')"
if [ -n "${RELAYGUARD_DEB_OUTDIR:-}" ]; then
    mkdir -p "$RELAYGUARD_DEB_OUTDIR"
    for f in $files; do mv "../$f" "$RELAYGUARD_DEB_OUTDIR/"; done
    mv "$changes" "$RELAYGUARD_DEB_OUTDIR/"
    outdir="$RELAYGUARD_DEB_OUTDIR"
else
    outdir="$(cd .. && pwd)"
fi
for f in $files; do echo "build-deb: $outdir/$f"; done
exit "$status"
