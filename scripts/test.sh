#!/usr/bin/env bash
# Runs the test suite. Starts a throwaway PostgreSQL server on loopback for the PostgreSQL
# backend's tests unless SYNISTER_TEST_POSTGRES_URL already names one, and installs Debian's
# chromium and chromium-driver for the service's browser test when they are missing (as root).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${SYNISTER_TEST_POSTGRES_URL:-}" ]; then
    SYNISTER_TEST_POSTGRES_URL=$(bash .ci/postgres.sh)
    export SYNISTER_TEST_POSTGRES_URL
    pg_dir=$(cat "${TMPDIR:-/tmp}/synister-pg-last")
    trap 'bash .ci/postgres.sh --stop "$pg_dir" 2>/dev/null || true' EXIT
fi
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
    # a failed installation stops here; only where it cannot be installed (2) does the test skip
    chromium_status=0
    bash .ci/chromium.sh || chromium_status=$?
    if [ "$chromium_status" -eq 2 ]; then
        echo "test.sh: no Chromium: the browser test skips (under CI=true it fails)" >&2
    elif [ "$chromium_status" -ne 0 ]; then
        exit "$chromium_status"
    fi
fi
.venv/bin/ruff check src tests benchmarks scripts
.venv/bin/lint-imports --no-cache  # imports run downward: the layers in pyproject.toml
# the docs site (site/): a broken link or a missing page fails (the banners are plugins' ads)
DISABLE_MKDOCS_2_WARNING=true NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --quiet
.venv/bin/python -m pytest -q --durations=15 "$@"
