#!/usr/bin/env bash
# Runs the test suite. Starts a throwaway PostgreSQL server on loopback for the PostgreSQL
# backend's tests unless SYNISTER_TEST_POSTGRES_URL already names one.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${SYNISTER_TEST_POSTGRES_URL:-}" ]; then
    pg_dir=$(mktemp -d /tmp/synister-pg.XXXXXX)
    export SYNISTER_PG_DIR="$pg_dir"
    SYNISTER_TEST_POSTGRES_URL=$(bash .ci/postgres.sh "$pg_dir")
    export SYNISTER_TEST_POSTGRES_URL
    trap 'bash .ci/postgres.sh --stop "$pg_dir" >/dev/null 2>&1 || true' EXIT
fi
.venv/bin/ruff check src tests benchmarks
.venv/bin/python -m pytest -q "$@"
