#!/usr/bin/env bash
# Set up a fresh machine and run the whole test suite: `bash scripts/test.sh` (also what CI runs).
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian's chromium for the Playwright browser tests (Playwright's own browser download does not work here).
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || echo "warning: could not install chromium; browser tests will be skipped" >&2
  else
    echo "warning: chromium not found and not root; browser tests will be skipped" >&2
  fi
fi

python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore -r requirements-dev.txt -e .

set +e
python3 -m pytest -q "$@"
rc=$?
set -e
if [ "$rc" = "5" ]; then
  echo "error: pytest collected no tests (exit 5); the suite must not be empty" >&2
fi
exit "$rc"
