#!/usr/bin/env bash
# db-replica's entrypoint. First start (an empty volume): wait for db-primary, clone it with
# pg_basebackup -R, which also writes standby.signal and primary_conninfo. Every start: run
# postgres as a hot standby that streams from the primary. Arguments go to postgres.
set -euo pipefail

: "${PGDATA:=/var/lib/postgresql/data}"
: "${PRIMARY_HOST:=db-primary}"
: "${PRIMARY_PORT:=5432}"
: "${REPLICATION_USER:=replicator}"
: "${REPLICATION_PASSWORD:?set REPLICATION_PASSWORD}"

# The image starts as root; the server refuses to, and wants a private data directory it owns.
if [ "$(id -u)" = 0 ]; then
  mkdir -p "$PGDATA"
  chown postgres:postgres "$PGDATA"
  chmod 0700 "$PGDATA"
  exec gosu postgres bash "$0" "$@"
fi

# pg_basebackup authenticates with it; the standby's WAL receiver reconnects with it later.
export PGPASSWORD="$REPLICATION_PASSWORD"

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  echo "replica: waiting for $PRIMARY_HOST:$PRIMARY_PORT"
  until pg_isready -q -h "$PRIMARY_HOST" -p "$PRIMARY_PORT"; do
    sleep 1
  done
  echo "replica: cloning $PRIMARY_HOST with pg_basebackup"
  if ! pg_basebackup --host="$PRIMARY_HOST" --port="$PRIMARY_PORT" \
    --username="$REPLICATION_USER" --pgdata="$PGDATA" \
    -R --wal-method=stream --checkpoint=fast --no-password --progress; then
    # Half a copy is worse than none: empty the directory, so the restart clones afresh.
    find "$PGDATA" -mindepth 1 -delete
    echo "replica: pg_basebackup failed" >&2
    exit 1
  fi
  chmod 0700 "$PGDATA"
fi

exec postgres "$@"
