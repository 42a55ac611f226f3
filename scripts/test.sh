#!/usr/bin/env bash
# Set up a fresh machine and run the WHOLE test suite on every core: `bash scripts/test.sh` (also what CI runs).
# A plain `pytest` runs the fast set only (slow and browser tests deselected by pyproject.toml's addopts).
# Extra arguments go to pytest, e.g. `bash scripts/test.sh tests/test_store.py`.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages, when root: chromium for the Playwright browser tests (Playwright's own browser download does not
# work here) and postgresql for the store tests against a real Postgres.
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null) \
      || echo "warning: could not install ${missing[*]}; their tests will be skipped" >&2
  else
    echo "warning: ${missing[*]} not found and not root; their tests will be skipped" >&2
  fi
fi

python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore -r requirements-dev.txt -e .

# A throw-away Postgres cluster on a private Unix socket (no TCP port), removed when the run ends. The store tests
# run against it as well as SQLite when COMPRESSION_LAB_TEST_PG is set.
pg_dir=""
stop_postgres() {
  if [ -n "$pg_dir" ]; then
    as_pg "$pg_bin/pg_ctl" -D "$pg_dir/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$pg_dir"
  fi
}
as_pg() {
  if [ "$(id -u)" = "0" ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ -n "$pg_bin" ] && [ -x "$pg_bin/initdb" ] && { [ "$(id -u)" != "0" ] || id postgres >/dev/null 2>&1; }; then
  pg_dir=$(mktemp -d /tmp/compression-lab-pg.XXXXXX)
  [ "$(id -u)" = "0" ] && chown postgres "$pg_dir"
  trap stop_postgres EXIT
  if as_pg "$pg_bin/initdb" -D "$pg_dir/data" -A trust -U postgres -E UTF8 --locale=C --no-sync >"$pg_dir/initdb.log" 2>&1 \
     && as_pg "$pg_bin/pg_ctl" -D "$pg_dir/data" -w -l "$pg_dir/server.log" \
          -o "-k $pg_dir -p 54329 -c listen_addresses= -c fsync=off" start >/dev/null; then
    export COMPRESSION_LAB_TEST_PG="postgresql+psycopg://postgres@/postgres?host=$pg_dir&port=54329"
    echo "postgres: throw-away cluster on $pg_dir (socket)"
  else
    echo "warning: could not start a Postgres cluster (see $pg_dir/*.log); Postgres store tests will be skipped" >&2
  fi
else
  echo "warning: postgresql not installed; Postgres store tests will be skipped" >&2
fi

# Everything (-m "" lifts the default deselection), two workers, one test file per worker at a time, the longest files
# first (tests/conftest.py RUN_FIRST; --no-loadscope-reorder keeps that order instead of "most tests first").
set +e
python3 -m pytest -q -m "" -n "${TEST_WORKERS:-2}" --dist loadfile --no-loadscope-reorder --durations=30 "$@"
rc=$?
set -e
if [ "$rc" = "5" ]; then
  echo "error: pytest collected no tests (exit 5); the suite must not be empty" >&2
fi
exit "$rc"
