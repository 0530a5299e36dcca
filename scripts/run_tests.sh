#!/usr/bin/env bash
# The test command: sets up .venv when needed, then runs the whole suite on CPU.
# Extra arguments go to pytest (e.g. scripts/run_tests.sh tests/test_loss.py -x).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup_venv.sh"
cd "$ROOT"
exec "$ROOT/.venv/bin/python" -m pytest "${@:-tests}"
