#!/usr/bin/env bash
# The test command: sets up .venv when needed, then runs the whole suite on CPU.
# Extra arguments go to pytest (e.g. scripts/run_tests.sh tests/test_loss.py -x).
# Two pytest workers, a test file each at a time: the end-to-end tests spend much of their time
# waiting on Ray and worker start-up, so two overlap well on 2 cores. PYTEST_WORKERS=0 runs serially.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup_venv.sh"
cd "$ROOT"
workers=${PYTEST_WORKERS:-2}
if [[ "$workers" == "0" ]]; then
  exec "$ROOT/.venv/bin/python" -m pytest "${@:-tests}"
fi
exec "$ROOT/.venv/bin/python" -m pytest -n "$workers" --dist loadfile "${@:-tests}"
