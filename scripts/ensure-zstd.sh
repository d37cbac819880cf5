#!/usr/bin/env bash
# The backup tests restore with standard tools as the README shows (zstd -d | pg_restore) and
# check that a backup object is a plain zstd frame. Install Debian's zstd when it is missing.
set -euo pipefail

if command -v zstd >/dev/null 2>&1; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1 || [ "$(id -u)" != 0 ]; then
  echo "zstd is missing; install Debian's zstd package (sudo apt-get install zstd)" >&2
  exit 1
fi
echo "installing Debian's zstd for the backup tests"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq zstd >/dev/null
