#!/usr/bin/env bash
# MASPO trained by verl's own trainer on CPU: the tiny model on the embedded arithmetic task.
# The script itself ships with the package (maspo_verl/sandbox/tiny/train_cpu.sh, so installs from a wheel
# have it too); this is the checkout's entry point. Arguments and environment: see that file.
#
#   bash examples/run_scripts/cpu/train_maspo_cpu.sh [HYDRA_OVERRIDE ...]
#   DRY_RUN=1 bash examples/run_scripts/cpu/train_maspo_cpu.sh
set -euo pipefail
exec bash "$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)/maspo_verl/sandbox/tiny/train_cpu.sh" "$@"
