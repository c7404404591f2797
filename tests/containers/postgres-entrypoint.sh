#!/bin/sh
# What the official postgres image's entrypoint does, in the part compose.yaml relies on: a cluster made
# in $PGDATA on first start (superuser $POSTGRES_USER with $POSTGRES_PASSWORD, database $POSTGRES_DB,
# password logins from the network), then the server as the postgres user on every address.
set -eu
case "${1:-}" in -*) set -- postgres "$@" ;; esac # flags only: the server's, as the official image does
if [ "${1:-}" != postgres ]; then
    exec "$@"
fi
shift
user=${POSTGRES_USER:-postgres}
db=${POSTGRES_DB:-$user}
mkdir -p "$PGDATA" /run/postgresql
chown postgres:postgres "$PGDATA" /run/postgresql
chmod 700 "$PGDATA"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    pwfile=$(mktemp)
    printf '%s\n' "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD is required}" >"$pwfile"
    chown postgres "$pwfile"
    runuser -u postgres -- initdb -D "$PGDATA" -U "$user" --pwfile="$pwfile" \
        --auth-local=trust --auth-host=scram-sha-256 --no-sync >/dev/null
    rm -f "$pwfile"
    echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
    if [ "$db" != postgres ]; then
        # Single-user mode: no server to start and stop just to create one database.
        echo "CREATE DATABASE \"$db\" OWNER \"$user\"" |
            runuser -u postgres -- postgres --single -D "$PGDATA" postgres >/dev/null
    fi
fi
# setpriv execs (runuser would stay as a parent): postgres is PID 1 and gets the stop signal itself.
exec setpriv --reuid=postgres --regid=postgres --init-groups postgres -D "$PGDATA" -c listen_addresses='*' "$@"
