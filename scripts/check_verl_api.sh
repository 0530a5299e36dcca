#!/usr/bin/env bash
# The verl API maspo-verl relies on (maspo_verl.integration.contract.py), checked in any verl source tree:
#
#   bash scripts/check_verl_api.sh                       # the verl installed in .venv (or $PYTHON's)
#   bash scripts/check_verl_api.sh ~/src/verl            # a checkout
#   bash scripts/check_verl_api.sh verl-main.tar.gz      # an sdist / snapshot archive
#
# Prints one MOVED line per broken entry (file, symbol, what the plugin uses it for) and exits 1;
# "OK" and exit 0 when every entry holds. Nothing is installed or imported from the tree.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
[[ -x "$PYTHON" ]] || PYTHON=python3
exec "$PYTHON" -m maspo_verl.integration.contract "$@"
