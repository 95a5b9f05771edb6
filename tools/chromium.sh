#!/usr/bin/env bash
# Debian's Chromium for the dashboard's browser tests (`make chromium`; `.ci/run` needs it,
# `make test` tries it and lets those tests skip without it). Playwright drives it; its own
# browser downloads are never used (nothing downloads at run time but this package install).
#
# Installs the chromium package when /usr/bin/chromium is missing and we are root with apt.
# Idempotent: run it at will.
set -euo pipefail

BROWSER=/usr/bin/chromium

say() { echo "chromium.sh: $*" >&2; }

if [ -x "$BROWSER" ]; then
    exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing Chromium from the distribution's packages"
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y chromium
else
    say "$BROWSER is missing and this is not root with apt-get: install it" \
        "(e.g. apt-get install chromium) for the dashboard's browser tests"
    exit 1
fi
[ -x "$BROWSER" ] || { say "the chromium package did not provide $BROWSER"; exit 1; }
say "$("$BROWSER" --version 2>/dev/null || echo "$BROWSER") ready"
