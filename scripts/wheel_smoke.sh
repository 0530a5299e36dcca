#!/usr/bin/env bash
# The wheel as a researcher installs it: build it, install it with its dependencies into a fresh
# venv outside any checkout (CPU torch pinned first, as the README's CPU install says), then run the
# installed commands from an empty directory: `config-dir`, `check`, `check --e2e` and the main job
# (`maspo-compare`, MASPO vs GRPO trained by verl's trainer). One PASS/FAIL line per check.
#
#   bash scripts/wheel_smoke.sh [--keep] [--steps N]     (about 10 minutes on 2 cores)
#
# Everything lands under one temp dir (removed unless --keep or a check failed). The test suite
# covers the wheel's metadata, contents and `check --e2e` (tests/test_packaging.py); this script adds
# the dependency resolution from the wheel's own metadata and the main job.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON_BIN="${PYTHON:-python3}"
KEEP=0
STEPS=2
while [[ $# -gt 0 ]]; do
  case "$1" in
    --keep) KEEP=1 ;;
    --steps) STEPS="$2"; shift ;;
    *) echo "wheel_smoke.sh: unknown argument $1 (known: --keep, --steps N)" >&2; exit 2 ;;
  esac
  shift
done

WORK="$(mktemp -d "${TMPDIR:-/tmp}/maspo-wheel-smoke.XXXXXX")"
FAILED=0
check() {  # name command... -> one PASS/FAIL line, output in $WORK/<name>.log
  local name="$1" start end
  shift
  start=$(date +%s)
  if (cd "$WORK/outside" && "$@") >"$WORK/$name.log" 2>&1; then
    end=$(date +%s); echo "PASS $name ($((end - start)) s)"
  else
    end=$(date +%s); echo "FAIL $name ($((end - start)) s): see $WORK/$name.log"; tail -n 15 "$WORK/$name.log"; FAILED=1
  fi
}
mkdir -p "$WORK/outside" "$WORK/dist"

# The wheel from a copy of the checkout, so no build/ or egg-info is left in the repo.
mkdir -p "$WORK/src" && git -C "$ROOT" archive HEAD | tar -x -C "$WORK/src"
if [[ -n "$(git -C "$ROOT" status --porcelain -- maspo_verl patches configs setup.py MANIFEST.in)" ]]; then
  echo "note: uncommitted changes are not in the wheel (it is built from HEAD)"
fi
check build-wheel "$PYTHON_BIN" -m pip wheel --no-deps -q -w "$WORK/dist" "$WORK/src"
WHEEL="$(find "$WORK/dist" -name "maspo_verl-*.whl" | head -n 1)"
[[ -n "$WHEEL" ]] || { echo "no wheel was built"; exit 1; }

"$PYTHON_BIN" -m venv "$WORK/venv"
PY="$WORK/venv/bin/python"
check install-torch "$PY" -m pip install -q "torch==2.13.0"
check install-wheel "$PY" -m pip install -q "$WHEEL"
check import-outside-checkout "$PY" -c "
import maspo_verl, pathlib, sys
path = pathlib.Path(maspo_verl.__file__).resolve()
assert '$WORK/venv' in str(path), f'maspo_verl imported from {path}, not the wheel'
import torch, verl
print('maspo_verl from', path, '| torch', torch.__version__, '| verl', verl.__version__)
"
check config-dir "$PY" -m maspo_verl config-dir
check check "$PY" -m maspo_verl check
check check-e2e "$PY" -m maspo_verl check --e2e --e2e-steps 1
check main-job "$WORK/venv/bin/maspo-compare" --methods maspo,vanilla --seeds 0 --steps "$STEPS" \
  --test-freq "$STEPS" --no-progress --output-dir "$WORK/outside/compare" --cache-dir "$WORK/cache"
if [[ -f "$WORK/outside/compare/comparison.md" ]]; then
  cat "$WORK/outside/compare/comparison.md"
fi

if [[ "$FAILED" == 0 && "$KEEP" == 0 ]]; then
  rm -rf "$WORK"
  echo "wheel smoke: PASS"
else
  echo "wheel smoke: $([[ "$FAILED" == 0 ]] && echo PASS || echo FAIL) (kept $WORK)"
fi
exit "$FAILED"
