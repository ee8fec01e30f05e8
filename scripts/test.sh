#!/usr/bin/env bash
# Install everything (scripts/install.sh), start the local services the tests use if they are down,
# then run the whole test suite with real models. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
# The tests also check the project's own (not default) detector, committed in weights/.
.venv/bin/incitescan weights fetch incitescan-weapons

if ! redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 && command -v redis-server >/dev/null; then
  echo "==> starting Redis"
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /tmp --logfile /tmp/incitescan-redis.log
fi

if command -v pg_ctlcluster >/dev/null && ! pg_isready -h 127.0.0.1 -q 2>/dev/null; then
  echo "==> starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start || true
fi

# The sdist and the wheel build offline, and the wheel installed without the extras runs
# `incitescan --help`, `doctor` and a scan (about a minute).
bash scripts/check_dist.sh

export INCITESCAN_REQUIRE_WEIGHTS=1
set +e
.venv/bin/python -m pytest "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure" >&2
  exit 1
fi
# Speed guard (docs/performance.md): baseline and ours scan a 20-s handheld clip with speech in
# this job; ours must be at least 1.3x faster (a ratio, so a slow or busy runner does not fail it).
# The issue's target is 2x; on this handheld clip ours measured 1.63-1.84x (docs/performance.md),
# so the guard catches large regressions from today's speed, not the target.
# About 2-3 minutes. INCITESCAN_SPEED_GUARD=0 skips it (e.g. when running a few tests locally).
if [ "$status" -eq 0 ] && [ "${INCITESCAN_SPEED_GUARD:-1}" != "0" ]; then
  echo "==> speed guard: ours at least 1.3x faster than the baseline"
  .venv/bin/python bench/perf.py --check 1.3 || status=1
fi
exit "$status"
