#!/usr/bin/env bash
# Runs the test suite. Starts a throwaway PostgreSQL server on loopback for the PostgreSQL
# backend's tests unless SYNISTER_TEST_POSTGRES_URL already names one.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${SYNISTER_TEST_POSTGRES_URL:-}" ]; then
    SYNISTER_TEST_POSTGRES_URL=$(bash .ci/postgres.sh)
    export SYNISTER_TEST_POSTGRES_URL
    pg_dir=$(cat "${TMPDIR:-/tmp}/synister-pg-last")
    trap 'bash .ci/postgres.sh --stop "$pg_dir" 2>/dev/null || true' EXIT
fi
.venv/bin/ruff check src tests benchmarks
.venv/bin/python -m pytest -q "$@"
