#!/usr/bin/env bash
# The e2e UI test drives Debian's Chromium through Playwright (never `playwright install`,
# which downloads its own browsers). Install the Debian package when it is missing.
set -euo pipefail

CHROMIUM=${AMAS_CHROMIUM:-/usr/bin/chromium}
if [ -x "$CHROMIUM" ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1 || [ "$(id -u)" != 0 ]; then
  echo "Chromium is missing at $CHROMIUM; install Debian's chromium package" \
       "(sudo apt-get install chromium) or set AMAS_CHROMIUM to a Chromium binary" >&2
  exit 1
fi
echo "installing Debian's chromium for the e2e UI test"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq chromium >/dev/null
# Debian's launcher script prints a harmless shell warning on machines with much memory.
"$CHROMIUM" --version 2>/dev/null
