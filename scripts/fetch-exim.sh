#!/bin/sh
# SPDX-License-Identifier: MIT
# fetch-exim.sh - unpack Debian 12's Exim 4.96 into a private directory for the end-to-end tests.
#
# exim4-daemon-light conflicts with postfix (both are the mail-transport-agent), so it is not
# installed: its .deb files are downloaded and unpacked into DIR (default
# /var/cache/relayguard-test/exim). Also creates the Debian-exim user the binary looks up by name,
# and installs the shared libraries it needs. Idempotent and quiet; prints the exim binary's path.
# Needs root (or sudo).
set -eu

dir=${1:-/var/cache/relayguard-test/exim}
exim="$dir/usr/sbin/exim4"
# Shared libraries exim4-daemon-light links against that a build machine may lack.
libs="libidn12 libgnutls-dane0 libgnutls30 libdb5.3 libnsl2 libpcre2-8-0 libidn2-0"

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive

missing=""
for p in $libs; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
        missing="$missing $p"
    fi
done
if [ -n "$missing" ]; then
    $SUDO apt-get update -qq
    # shellcheck disable=SC2086
    $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# The binary drops privileges to this user and refuses to run without it. Debian's exim4-base
# postinst creates it the same way (a system user and group, home the spool directory).
if ! getent passwd Debian-exim >/dev/null; then
    $SUDO useradd --system --user-group --no-create-home --home-dir /var/spool/exim4 \
        --shell /usr/sbin/nologin Debian-exim
fi

if [ ! -x "$exim" ]; then
    $SUDO mkdir -p "$dir"
    debs=$(mktemp -d)
    trap 'rm -rf "$debs"' EXIT
    # apt-get download writes into the current directory; "_apt" must be able to write there.
    chmod 0777 "$debs"
    if ! (cd "$debs" && $SUDO apt-get download -qq exim4-daemon-light exim4-base >/dev/null 2>&1); then
        $SUDO apt-get update -qq
        (cd "$debs" && $SUDO apt-get download -qq exim4-daemon-light exim4-base >/dev/null)
    fi
    for deb in "$debs"/*.deb; do
        $SUDO dpkg-deb -x "$deb" "$dir"
    done
fi
"$exim" -C /dev/null -bV >/dev/null 2>&1
echo "$exim"
