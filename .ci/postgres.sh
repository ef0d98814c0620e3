#!/usr/bin/env bash
# Start a throwaway PostgreSQL server for the synister tests and print its URL (one line).
#
# Run as root on a fresh Debian 12 machine (CI) or as any user with PostgreSQL installed:
#     export SYNISTER_TEST_POSTGRES_URL=$(sudo .ci/postgres.sh)
# Installs the Debian package `postgresql` when initdb/pg_ctl are missing, creates a cluster
# in a temporary folder, starts it on 127.0.0.1 on a free port, and creates a password user
# and a database. Everything else goes to stderr.
#
# Stop the server and delete its data with `.ci/postgres.sh --stop [FOLDER]` (default: the last
# one started, whose folder is written to $TMPDIR/synister-pg-last).
set -euo pipefail

log() { echo "postgres.sh: $*" >&2; }

if [[ "${1:-}" == "--stop" ]]; then
    FOLDER=${2:-$(cat "${TMPDIR:-/tmp}/synister-pg-last")}
    PG_CTL=$(ls -d /usr/lib/postgresql/*/bin/pg_ctl 2>/dev/null | sort -V | tail -n 1)
    PG_CTL=${PG_CTL:-pg_ctl}
    if [[ $(id -u) -eq 0 ]]; then
        runuser -u postgres -- "$PG_CTL" -D "$FOLDER/data" -m fast stop >&2 || true
    else
        "$PG_CTL" -D "$FOLDER/data" -m fast stop >&2 || true
    fi
    rm -rf "$FOLDER"
    exit 0
fi

find_bin() {
    local dir
    if command -v pg_ctl >/dev/null 2>&1 && command -v initdb >/dev/null 2>&1; then
        dirname "$(readlink -f "$(command -v pg_ctl)")"
        return 0
    fi
    for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if [[ -x "$dir/pg_ctl" && -x "$dir/initdb" ]]; then
            echo "$dir"
            return 0
        fi
    done
    return 1
}

if ! BIN=$(find_bin); then
    if [[ $(id -u) -ne 0 ]]; then
        log "PostgreSQL is not installed and installing it needs root"
        exit 1
    fi
    log "installing postgresql"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update >&2
    apt-get install -y postgresql >&2
    BIN=$(find_bin)
fi

# initdb refuses to run as root: run the server as the `postgres` user then
if [[ $(id -u) -eq 0 ]]; then
    id postgres >/dev/null 2>&1 || useradd --system --create-home postgres
    as_owner() { runuser -u postgres -- "$@"; }
    OWNER=postgres
else
    as_owner() { "$@"; }
    OWNER=$(id -un)
fi

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
FOLDER=$(mktemp -d "${TMPDIR:-/tmp}/synister-pg.XXXXXX")
chown "$OWNER" "$FOLDER"
chmod 700 "$FOLDER"
USER_NAME=synister
PASSWORD=$(python3 -c 'import secrets; print(secrets.token_hex(12))')
DB_NAME=synister_test

as_owner "$BIN/initdb" -D "$FOLDER/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
    >"$FOLDER/initdb.log" 2>&1 || { cat "$FOLDER/initdb.log" >&2; exit 1; }
as_owner "$BIN/pg_ctl" -D "$FOLDER/data" -l "$FOLDER/server.log" -w \
    -o "-c listen_addresses=127.0.0.1 -p $PORT -k $FOLDER -c fsync=off" start >&2 \
    || { cat "$FOLDER/server.log" >&2; exit 1; }

as_owner "$BIN/psql" -h "$FOLDER" -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -q \
    -c "CREATE ROLE $USER_NAME LOGIN CREATEDB PASSWORD '$PASSWORD'" \
    -c "CREATE DATABASE $DB_NAME OWNER $USER_NAME" >&2

echo "$FOLDER" > "$(dirname "$FOLDER")/synister-pg-last"
log "server data in $FOLDER (log: $FOLDER/server.log)"
if [[ $(id -u) -eq 0 ]]; then
    log "stop with: runuser -u postgres -- $BIN/pg_ctl -D $FOLDER/data stop && rm -rf $FOLDER"
else
    log "stop with: $BIN/pg_ctl -D $FOLDER/data stop && rm -rf $FOLDER"
fi
echo "postgresql://$USER_NAME:$PASSWORD@127.0.0.1:$PORT/$DB_NAME"
