#!/usr/bin/env bash
# Start the machine's PostgreSQL cluster when it is not answering on 127.0.0.1:5432.
# The integration tests need it; they create and drop their own scratch databases.
set -euo pipefail

ready() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }

if ready; then
  exit 0
fi
if ! command -v pg_ctlcluster >/dev/null 2>&1; then
  echo "PostgreSQL is not running on 127.0.0.1:5432 and pg_ctlcluster is not installed;" \
       "install PostgreSQL (apt-get install postgresql) or start your server" >&2
  exit 1
fi
version=$(ls /etc/postgresql | sort -V | tail -n 1)
echo "starting PostgreSQL $version (cluster main)"
pg_ctlcluster --skip-systemctl-redirect "$version" main start
for _ in $(seq 1 60); do
  ready && exit 0
  sleep 0.5
done
echo "PostgreSQL $version did not become ready on 127.0.0.1:5432 within 30 s" >&2
exit 1
