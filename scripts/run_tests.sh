#!/usr/bin/env bash
# The test command: sets up .venv when needed, lints, then runs the suite on CPU in two phases:
# the unit tests first (seconds each: a broken loss fails in the first minute), then verl's
# integration tests and the CPU trainings (tests/conftest.py: markers unit / verl / training).
# Extra arguments go to pytest as one run instead (e.g. scripts/run_tests.sh tests/test_loss.py -x).
# Two pytest workers, a test file each at a time: the trainings spend much of their time waiting on
# Ray and worker start-up, so two overlap well on 2 cores. PYTEST_WORKERS=0 runs serially.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup_venv.sh"
cd "$ROOT"
workers=${PYTEST_WORKERS:-2}
parallel=()
if [[ "$workers" != "0" ]]; then
  parallel=(-n "$workers" --dist loadfile)
fi
if [[ $# -gt 0 ]]; then
  exec "$ROOT/.venv/bin/python" -m pytest "${parallel[@]}" "$@"
fi

echo "[tests] ruff (verl's lint settings, ruff.toml)"
"$ROOT/.venv/bin/ruff" check .
"$ROOT/.venv/bin/ruff" format --check --quiet .
echo "[tests] unit tests"
"$ROOT/.venv/bin/python" -m pytest "${parallel[@]}" -m unit tests
echo "[tests] verl integration tests and CPU trainings"
"$ROOT/.venv/bin/python" -m pytest "${parallel[@]}" -m "not unit" tests
