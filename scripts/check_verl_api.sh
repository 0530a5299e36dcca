#!/usr/bin/env bash
# The verl API maspo-verl relies on (maspo_verl/integration/contract.py), checked in any verl source tree:
#
#   bash scripts/check_verl_api.sh                       # the verl installed in .venv (or $PYTHON's)
#   bash scripts/check_verl_api.sh ~/src/verl            # a checkout
#   bash scripts/check_verl_api.sh verl-main.tar.gz      # an sdist / snapshot archive
#
# Covers every verl name the package and its patches import or rebind (with the parameters we pass),
# the trainer config keys we set or the loss guard reads (verl/trainer/config/_generated_ppo_trainer.yaml),
# the val-core metric names, and the call sites of our policy losses and reward functions.
# Prints one MOVED line per broken entry (file, symbol or key, what the plugin uses it for) and exits 1
# (a missing checked file is a broken entry); "OK" and exit 0 when every entry holds; 2 when the tree
# cannot be read. Nothing is installed or imported from the tree.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
[[ -x "$PYTHON" ]] || PYTHON=python3
exec "$PYTHON" -m maspo_verl.integration.contract "$@"
