#!/bin/sh
# SPDX-License-Identifier: MIT
# install-deps.sh - install what relayguard needs to build and test, from Debian 12 packages.
#
# Idempotent: packages already present are not touched, apt-get runs only when something is
# missing. Needs root (or sudo). Set RELAYGUARD_DEPS_EXTRA to add packages.
set -eu

# clang, libclang-rt-dev (libFuzzer, sanitizer runtimes) and llvm (llvm-symbolizer): the fuzz
# targets, which CI runs (.ci/run, scripts/run-fuzz.sh); the default build uses g++.
pkgs="build-essential cmake ccache pkg-config git ca-certificates openssl
libboost1.81-dev libhiredis-dev libssl-dev libspdlog-dev libfmt-dev libtomlplusplus-dev
libgtest-dev libgmock-dev redis-server procps netcat-openbsd
postfix dovecot-core swaks libnet-ssleay-perl libio-socket-ssl-perl libidn12
clang libclang-rt-dev llvm ${RELAYGUARD_DEPS_EXTRA:-}"

missing=""
for p in $pkgs; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
        missing="$missing $p"
    fi
done
[ -z "$missing" ] && exit 0

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

echo "install-deps: installing:$missing" >&2
export DEBIAN_FRONTEND=noninteractive
# The end-to-end tests run private Postfix instances with their own config; the system-wide
# Postfix stays unconfigured (and unstarted), so answer its debconf question before it is asked.
case "$missing" in *" postfix"*)
    echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections ;;
esac
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
