#!/usr/bin/env bash
# The main job: sets up .venv when needed, then compares MASPO with GRPO, each trained by verl's
# own trainer (main_ppo) on CPU. Arguments go to `python -m maspo_verl.sandbox.compare` (see --help),
# e.g. `scripts/run_main_job.sh --preset full`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup_venv.sh"
cd "$ROOT"
export PATH="$ROOT/.venv/bin:$PATH"
exec "$ROOT/.venv/bin/python" -m maspo_verl.sandbox.compare "$@"
