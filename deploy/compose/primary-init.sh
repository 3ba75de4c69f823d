#!/usr/bin/env bash
# db-primary, first start only (the postgres image runs /docker-entrypoint-initdb.d/* against an
# empty volume): create the role db-replica streams as, and let it connect for replication.
#
# The image's own pg_hba.conf line (`host all all all scram-sha-256`) does not cover replication
# connections, which need a line of their own. "all" addresses is safe here: db-primary is only
# on the internal `data` network and publishes no port (see docker-compose.yml).
set -euo pipefail

: "${POSTGRES_REPLICATION_USER:?set POSTGRES_REPLICATION_USER}"
: "${POSTGRES_REPLICATION_PASSWORD:?set POSTGRES_REPLICATION_PASSWORD}"

# psql variables (:"name", :'value') quote both, whatever characters the password holds.
psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  --set=name="$POSTGRES_REPLICATION_USER" --set=password="$POSTGRES_REPLICATION_PASSWORD" <<'SQL'
CREATE ROLE :"name" WITH REPLICATION LOGIN PASSWORD :'password';
SQL

printf 'host replication %s all scram-sha-256\n' "$POSTGRES_REPLICATION_USER" >>"$PGDATA/pg_hba.conf"
echo "primary-init: replication role $POSTGRES_REPLICATION_USER created"
