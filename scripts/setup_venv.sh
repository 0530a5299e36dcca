#!/usr/bin/env bash
# Create .venv at the repo root (when missing) and install maspo-verl into it, editable, with
# pinned CPU torch, verl and the test extra. Idempotent: a stamp of the install inputs makes a
# second run a no-op.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PYTHON_BIN="${PYTHON:-python3}"

if [[ ! -x "$VENV/bin/python" ]]; then
  echo "[setup] creating $VENV with $("$PYTHON_BIN" --version)"
  "$PYTHON_BIN" -m venv "$VENV"
fi

STAMP="$VENV/.maspo-verl-install"
WANT="$(cat "$ROOT/setup.py" "$ROOT/requirements/cpu-constraints.txt" | sha256sum | cut -d' ' -f1)"
if [[ "$(cat "$STAMP" 2>/dev/null || true)" == "$WANT" ]] && "$VENV/bin/python" -c "import importlib.util as u, sys; sys.exit(u.find_spec('maspo_verl') is None)" 2>/dev/null; then
  exit 0
fi

LOG="$VENV/install.log"
echo "[setup] installing torch 2.13.0, verl and maspo-verl[test] into $VENV (log: $LOG)"
install() {
  if ! "$VENV/bin/python" -m pip install "$@" >>"$LOG" 2>&1; then
    tail -n 40 "$LOG" >&2
    echo "[setup] pip install $* failed; full log: $LOG" >&2
    exit 1
  fi
}
: > "$LOG"
install --upgrade pip
# torch first and pinned, so nothing later can pull a CUDA build. Where the default index serves
# the CUDA build of torch 2.13.0 (plain PyPI on Linux x86_64), point TORCH_INDEX_URL at a CPU index,
# e.g. TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu.
if [[ -n "${TORCH_INDEX_URL:-}" ]]; then
  install "torch==2.13.0" --index-url "$TORCH_INDEX_URL"
else
  install "torch==2.13.0"
fi
# Say which torch build pip actually picked: a CUDA build here means a multi-GB download and wasted disk.
TORCH_BUILD="$("$VENV/bin/python" -W ignore -c 'import torch; print(torch.__version__, "CUDA " + torch.version.cuda + " build" if torch.version.cuda else "CPU-only build")')"
echo "[setup] torch $TORCH_BUILD"
if [[ "$TORCH_BUILD" == *CUDA* ]]; then
  echo "[setup] WARNING: pip installed a CUDA build of torch; on a CPU-only box rerun with" \
       "TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu after removing $VENV" >&2
fi
install -c "$ROOT/requirements/cpu-constraints.txt" -e "${ROOT}[test,cpu]"
echo "$WANT" > "$STAMP"
echo "[setup] done: $("$VENV/bin/python" -c 'import torch, verl; print("torch", torch.__version__, "verl", verl.__version__)')"
