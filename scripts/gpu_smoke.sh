#!/usr/bin/env bash
# One-GPU smoke check of maspo-verl on a CUDA machine (target: under 10 minutes, install included).
# It has never run in this repository's CI (no GPU there); its CPU-checkable parts are tested in
# tests/test_gpu_smoke.py. From the repository root:
#
#   bash scripts/gpu_smoke.sh                      # every check, one PASS/FAIL line each with its time
#   bash scripts/gpu_smoke.sh --only loss,bench    # some checks (install is implied unless --no-install)
#   bash scripts/gpu_smoke.sh --print              # print the commands, run nothing
#
# Checks, in order:
#   install   a venv of its own (--venv, default .venv-gpu) with `pip install -e ".[gpu,test]"`
#             (verl[vllm] and its CUDA torch, math-verify, pytest), then torch must see a CUDA device
#   loss      the loss tests (independent reference, float64 gradcheck, bf16 inputs, masking, metrics)
#             with torch's default device set to CUDA, so their tensors live on the GPU
#   bench     benchmarks/bench_loss.py on the GPU (MASPO vs verl's vanilla and sapo)
#   maspo     REHEARSE=gpu bash examples/run_scripts/1.5b/maspo.sh: the experiment script's own config
#             with verl's vLLM rollout on the tiny model, 2 steps, validation on all six sets, then
#             the Pass@k table and the plot (examples/run_scripts/common.sh, maspo_rehearse)
#   vanilla   the same for examples/run_scripts/1.5b/grpo.sh (verl's vanilla loss)
# Logs and run outputs go to --workdir (default gpu_smoke_out/). Exit status: the number of failed checks.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${GPU_SMOKE_VENV:-$repo/.venv-gpu}"
workdir="${GPU_SMOKE_WORKDIR:-$repo/gpu_smoke_out}"
all_checks=(install loss bench maspo vanilla)
checks=("${all_checks[@]}")
print_only=0
install=1

usage() {
    sed -n '2,22p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    echo "Options: --only CHECK[,CHECK...]  --no-install  --venv DIR  --workdir DIR  --print  --help"
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        --only)
            [[ $# -ge 2 ]] || { echo "gpu_smoke.sh: --only needs a value" >&2; exit 2; }
            IFS=, read -ra checks <<<"$2"
            for check in "${checks[@]}"; do
                if [[ ! " ${all_checks[*]} " == *" $check "* ]]; then
                    echo "gpu_smoke.sh: unknown check '$check' (choose from: ${all_checks[*]})" >&2
                    exit 2
                fi
            done
            shift 2
            ;;
        --no-install) install=0; shift ;;
        --venv)
            [[ $# -ge 2 ]] || { echo "gpu_smoke.sh: --venv needs a value" >&2; exit 2; }
            venv="$2"; shift 2
            ;;
        --workdir)
            [[ $# -ge 2 ]] || { echo "gpu_smoke.sh: --workdir needs a value" >&2; exit 2; }
            workdir="$2"; shift 2
            ;;
        --print) print_only=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "gpu_smoke.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done
if [[ "$install" == 1 && ! " ${checks[*]} " == *" install "* ]]; then
    checks=(install "${checks[@]}")
fi
python="$venv/bin/python"

# pytest plugin for the loss check: CUDA as torch's default device, refused when there is none.
plugin_dir="$workdir/pytest_plugin"
write_plugin() {
    mkdir -p "$plugin_dir"
    cat >"$plugin_dir/maspo_cuda_default_device.py" <<'PLUGIN'
import pytest
import torch


def pytest_configure(config):
    if not torch.cuda.is_available():
        raise pytest.UsageError("gpu_smoke: torch sees no CUDA device")
    torch.set_default_device("cuda")
PLUGIN
}

bench_args=(--sizes "1M,4M" --repeats 5)
if grep -q -- "--device" "$repo/benchmarks/bench_loss.py"; then
    bench_args+=(--device cuda)
fi

# check_command NAME: the command of one check, in the array CHECK_COMMAND.
check_command() {
    case "$1" in
        install)
            # shellcheck disable=SC2016  # $1 / $2 expand in the inner bash
            CHECK_COMMAND=(bash -c 'python3 -m venv "$1" && "$1/bin/pip" install -e "$2[gpu,test]" && "$1/bin/python" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else \"torch sees no CUDA device\")"' install "$venv" "$repo")
            ;;
        loss)
            CHECK_COMMAND=(env "PYTHONPATH=$plugin_dir${PYTHONPATH:+:$PYTHONPATH}" "$python" -m pytest -q -p no:cacheprovider
                -p maspo_cuda_default_device "$repo/tests/test_loss.py" "$repo/tests/test_gate.py")
            ;;
        bench)
            CHECK_COMMAND=("$python" -c 'import runpy, sys, torch; torch.set_default_device("cuda"); sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name="__main__")'
                "$repo/benchmarks/bench_loss.py" "${bench_args[@]}")
            ;;
        maspo | vanilla)
            local script=maspo.sh
            [[ "$1" == vanilla ]] && script=grpo.sh
            CHECK_COMMAND=(env REHEARSE=gpu "PYTHON=$python" "OUTPUT_DIR=$workdir/runs" "REHEARSAL_DIR=$workdir/rehearsal_inputs"
                bash "$repo/examples/run_scripts/1.5b/$script")
            ;;
    esac
}

failures=0
run_check() {
    local name="$1" log="$workdir/$1.log" started elapsed
    check_command "$name"
    if [[ "$print_only" == 1 ]]; then
        printf '%s:' "$name"
        printf ' %q' "${CHECK_COMMAND[@]}"
        printf '\n'
        return
    fi
    started=$(date +%s)
    if (cd "$repo" && "${CHECK_COMMAND[@]}") >"$log" 2>&1; then
        elapsed=$(($(date +%s) - started))
        printf 'PASS %-8s %4ds  (log: %s)\n' "$name" "$elapsed" "$log"
    else
        elapsed=$(($(date +%s) - started))
        printf 'FAIL %-8s %4ds  (log: %s; last lines below)\n' "$name" "$elapsed" "$log"
        tail -n 15 "$log" | sed 's/^/    /'
        failures=$((failures + 1))
    fi
}

if [[ "$print_only" == 0 ]]; then
    mkdir -p "$workdir"
    write_plugin
    if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; then
        echo "FAIL gpu      nvidia-smi finds no GPU: this smoke check needs one CUDA device" >&2
        exit 1
    fi
fi
total_started=$(date +%s)
for check in "${checks[@]}"; do
    run_check "$check"
done
if [[ "$print_only" == 0 ]]; then
    echo "gpu_smoke: $((${#checks[@]} - failures))/${#checks[@]} checks passed in $(($(date +%s) - total_started))s"
fi
exit "$failures"
