#!/usr/bin/env bash
# The verl version matrix: run before a release; CI keeps one verl (scripts/run_tests.sh).
#
#   bash scripts/test_verl_versions.sh [--no-e2e] [--group NAME ...] [VERSION ...]
#       VERSION: 0.8.0 0.9.0 0.9.1 main (default: all); --group: run only that test group (repeatable)
#
# Per version, a cached venv under $MASPO_VERL_MATRIX_CACHE (default ~/.cache/maspo_verl/verl-matrix/<version>):
# torch==2.13.0 first (CPU build), then that verl (PyPI, or for `main` a source archive of verl's main at
# commit 1dda039b9, which builds 0.10.0.dev0: $MASPO_VERL_MAIN_SNAPSHOT, by default
# verl-main-1dda039b9.tar.gz in the folder `shared` beside this checkout), then this checkout with
# `pip install -c <torch+verl pins> -e .[test]`. It asserts that the plugin install left verl's version
# alone and that an unconstrained `pip install --dry-run -e .[test]` would not touch verl either, then
# runs the version-independent test groups, the verl API contract on that verl's source (for `main` also
# on the snapshot archive itself) and `check --e2e`, and prints a table of versions x groups.
# A venv is reused while its stamp (setup.py + this script's install steps) is unchanged.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${MASPO_VERL_MATRIX_CACHE:-$HOME/.cache/maspo_verl/verl-matrix}"
MAIN_SNAPSHOT="${MASPO_VERL_MAIN_SNAPSHOT:-$ROOT/../shared/verl-main-1dda039b9.tar.gz}"
PYTHON_BIN="${PYTHON:-python3}"
TORCH_PIN="torch==2.13.0"
RUN_E2E=1
VERSIONS=()
ONLY_GROUPS=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --no-e2e) RUN_E2E=0 ;;
    --group) [[ $# -ge 2 ]] || { echo "--group needs a group name" >&2; exit 2; }; ONLY_GROUPS+=("$2"); shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    0.8.0|0.9.0|0.9.1|main) VERSIONS+=("$1") ;;
    *) echo "unknown verl version or option: $1 (known: 0.8.0 0.9.0 0.9.1 main, --no-e2e, --group NAME)" >&2; exit 2 ;;
  esac
  shift
done
[[ ${#VERSIONS[@]} -eq 0 ]] && VERSIONS=(0.8.0 0.9.0 0.9.1 main)

# Test groups (not GROUPS: bash owns that name): name, then pytest arguments (paths relative to the checkout). These are the tests that use
# only the API every verl of the matrix shares (loss registry and signature, agg_loss, ppo_loss,
# PolicyLossConfig/ActorConfig, the ppo_trainer yaml), plus the batched agent loop's rows against each
# V1 verl's own worker and the vectorized validation bootstrap against each V1 verl's own (not 0.8.0:
# no V1 trainer, so no CPU backend); the rest of tests/ exercises verl-0.9.1-only
# internals (the CPU trainer patches) and runs in CI against the pinned verl.
TEST_GROUPS=(
  "loss|tests/test_loss.py tests/test_gate.py"
  "registration|tests/test_registration.py"
  "config+ActorConfig|tests/test_config.py -k 'not yaml'"
  "ppo_loss call site|tests/test_verl_call_site.py"
  "hydra maspo.yaml|tests/test_config.py -k yaml"
  "batched agent loop|tests/test_batched_agent_loop.py"
  "validation bootstrap|tests/test_fast_validation_metrics.py"
  "verl API contract|tests/test_verl_contract.py"
  "loss guard|tests/test_loss_guard.py"
)
if [[ ${#ONLY_GROUPS[@]} -gt 0 ]]; then
  selected=()
  for group in "${TEST_GROUPS[@]}"; do
    for only in "${ONLY_GROUPS[@]}"; do [[ "${group%%|*}" == "$only" ]] && selected+=("$group"); done
  done
  [[ ${#selected[@]} -eq ${#ONLY_GROUPS[@]} ]] || { echo "unknown --group in: ${ONLY_GROUPS[*]} (known: ${TEST_GROUPS[*]%%|*})" >&2; exit 2; }
  TEST_GROUPS=("${selected[@]}")
fi

# Tests that use what a verl version lacks, deselected there by name (and counted in the table):
# verl 0.8's agg_loss has no loss_agg_mode "token-sum" (it raises "Invalid loss_agg_mode: token-sum");
# verl 0.8 has no V1 trainer, so the CPU backend (and a CPU run through it) refuses it.
deselected_for() {  # version -> pytest --deselect arguments
  [[ "$1" == 0.8.0 ]] || return 0
  local test
  for test in "test_hard_gate_without_limiter_and_risk_control_is_verl_vanilla[False-token-sum]" \
              "test_hard_gate_without_limiter_and_risk_control_is_verl_vanilla[True-token-sum]" \
              "test_gate_weight_metric_is_the_mean_over_gated_tokens_in_both_modes"; do
    echo "--deselect=tests/test_loss.py::$test"
  done
}

log() { echo "[matrix] $*" >&2; }

install_venv() {  # version venv -> 0 when the venv is ready
  local version="$1" venv="$2" verl_spec stamp want
  if [[ "$version" == main ]]; then
    [[ -f "$MAIN_SNAPSHOT" ]] || { log "main: snapshot $MAIN_SNAPSHOT not found"; return 1; }
    verl_spec="$MAIN_SNAPSHOT"
  else
    verl_spec="verl==$version"
  fi
  # verl 0.8.0 requires numpy<2 but leaves pyarrow open, and today's pyarrow (and the datasets that needs it)
  # require numpy 2: pin the newest pair that still imports with numpy 1.
  local extra_pins=""
  [[ "$version" == 0.8.0 ]] && extra_pins=$'pyarrow==19.0.1\ndatasets==3.6.0'
  stamp="$venv/.matrix-install"
  want="$(sha256sum < "$ROOT/setup.py" | cut -d' ' -f1) $TORCH_PIN $verl_spec ${extra_pins//$'\n'/ }"
  if [[ "$(cat "$stamp" 2>/dev/null)" == "$want" ]]; then
    log "$version: cached venv $venv"
    return 0
  fi
  local pip_log="$venv.install.log"
  mkdir -p "$(dirname "$venv")"
  : > "$pip_log"
  pip() { "$venv/bin/python" -m pip "$@" >>"$pip_log" 2>&1 || { tail -n 30 "$pip_log" >&2; log "$version: pip $* failed (log: $pip_log)"; return 1; }; }
  if [[ ! -x "$venv/bin/python" ]]; then
    log "$version: creating $venv"
    "$PYTHON_BIN" -m venv "$venv" || return 1
  fi
  log "$version: installing $TORCH_PIN, then $verl_spec, then maspo-verl[test] (log: $pip_log)"
  pip install "$TORCH_PIN" || return 1
  pip install -c <(printf '%s\n%s\n' "$TORCH_PIN" "$extra_pins") "$verl_spec" || return 1
  local verl_before verl_after
  verl_before="$("$venv/bin/python" -c 'from importlib.metadata import version; print(version("verl"))')" || return 1
  pip install -c <(printf '%s\nverl==%s\n%s\n' "$TORCH_PIN" "$verl_before" "$extra_pins") -e "${ROOT}[test]" || return 1
  # verl.__version__ as verl reports it, normalised (main says "0.10.0.dev", its metadata "0.10.0.dev0").
  verl_after="$("$venv/bin/python" -c 'import verl; from packaging.version import Version; print(Version(verl.__version__))')" || return 1
  if [[ "$verl_after" != "$verl_before" ]]; then
    log "$version: installing maspo-verl changed verl $verl_before -> $verl_after"
    return 1
  fi
  # Without any pin on verl, pip must find the installed verl good enough: nothing to install for it.
  "$venv/bin/python" -m pip install --dry-run -c <(printf '%s\n%s\n' "$TORCH_PIN" "$extra_pins") -e "${ROOT}[test]" >"$venv.dry-run.log" 2>&1 \
    || { cat "$venv.dry-run.log" >&2; log "$version: unconstrained dry-run install failed"; return 1; }
  if grep -E '^Would install( | .* )verl-[0-9]' "$venv.dry-run.log" >&2; then
    log "$version: an unconstrained install of maspo-verl would replace verl $verl_before"
    return 1
  fi
  log "$version: verl $verl_before kept by the plugin install (constrained and unconstrained dry-run)"
  echo "$want" > "$stamp"
}

run_group() {  # venv junit_xml pytest-args... -> prints "passed/total" (or "error")
  local venv="$1" xml="$2"; shift 2
  (cd "$ROOT" && env -u VERL_USE_EXTERNAL_MODULES -u VERL_USE_EXTERNAL_PLUGINS \
     "$venv/bin/python" -m pytest -q -p no:cacheprovider --timeout 900 --junitxml "$xml" "$@") >"$xml.log" 2>&1
  "$venv/bin/python" - "$xml" "$@" <<'EOF'
import sys, xml.etree.ElementTree as ET
try:
    root = ET.parse(sys.argv[1]).getroot()
except (OSError, ET.ParseError):
    print("error"); raise SystemExit
suite = root if root.tag == "testsuite" else root.find("testsuite")
total, failed = int(suite.get("tests")), int(suite.get("failures")) + int(suite.get("errors"))
skipped = int(suite.get("skipped"))
paths = {arg for arg in sys.argv[2:] if arg.startswith("tests/")}
deselected = sum(arg.startswith("--deselect=") and arg[len("--deselect="):].split("::")[0] in paths
                 for arg in sys.argv[2:])
notes = [f"{skipped} skipped"] * bool(skipped) + [f"{deselected} deselected"] * bool(deselected)
print(f"{total - failed - skipped}/{total}" + (f" ({', '.join(notes)})" if notes else ""))
EOF
}

run_contract() {  # version venv -> prints OK / FAIL (the contract on the installed verl; main: also the snapshot)
  local version="$1" venv="$2" log="$CACHE/results/$1.contract.log" sources=("")
  [[ "$version" == main ]] && sources+=("$MAIN_SNAPSHOT")
  : > "$log"
  local source
  for source in "${sources[@]}"; do
    (cd "$ROOT" && "$venv/bin/python" -m maspo_verl.integration.contract ${source:+"$source"}) >>"$log" 2>&1 \
      || { echo "FAIL ($(grep -c '^MOVED' "$log") moved)"; return; }
  done
  echo "OK"
}

run_e2e() {  # version venv -> prints pass / FAIL / patches not supported
  local version="$1" venv="$2" workdir env_extra=()
  workdir="$(mktemp -d "${TMPDIR:-/tmp}/maspo-matrix-e2e-$version.XXXXXX")"
  # verl 0.8 has no verl.plugins entry points: the documented mechanism is VERL_USE_EXTERNAL_MODULES.
  [[ "$version" == 0.8.0 ]] && env_extra=(VERL_USE_EXTERNAL_MODULES=maspo_verl.integration.plugin)
  # TMPDIR: e2e's run folder (kept when it fails, with verl's train.log) lands inside $workdir.
  (cd "$workdir" && env "${env_extra[@]}" TMPDIR="$workdir" timeout 1500 \
     "$venv/bin/python" -m maspo_verl check --e2e --e2e-steps 1) >"$CACHE/results/$version.e2e.log" 2>&1
  local rc=$?
  find "$workdir" -name train.log -exec cp {} "$CACHE/results/$version.e2e.train.log" \;
  if [[ $rc -eq 0 ]]; then
    echo "pass"
  elif grep -rqs "was written and tested for verl" "$CACHE/results/$version.e2e.log" "$workdir"; then
    echo "patches not supported"
  else
    echo "FAIL (rc $rc)"
  fi
  rm -rf "$workdir"
}

# The table: every version with a result on disk (this run's and earlier runs'). A group passes when
# passed == total; "patches not supported" in the e2e column is a statement, not a failure.
print_table() {  # -> exit status 1 when any group of any version failed
"$PYTHON_BIN" - "$CACHE/results" "${TEST_GROUPS[@]%%|*}" <<'EOF'
import re, sys
from pathlib import Path

results, groups = Path(sys.argv[1]), sys.argv[2:]
print()
print("| matrix | verl | " + " | ".join(groups) + " | contract on the source | check --e2e |")
print("|---|---|" + "---|" * (len(groups) + 2))
failed = False
for version in ("0.8.0", "0.9.0", "0.9.1", "main"):
    row = results / f"{version}.tsv"
    if not row.is_file():
        continue
    cells = row.read_text().rstrip("\n").split("\t")
    print("| " + " | ".join(cells) + " |")
    for cell in cells[2:]:
        counts = re.match(r"(\d+)/(\d+)", cell)
        if "FAIL" in cell or cell == "error" or (counts and (counts.group(1) != counts.group(2) or counts.group(2) == "0")):
            failed = True
print()
print(f"(passed/total tests per group; logs and junit xml in {results})")
sys.exit(1 if failed else 0)
EOF
}

# Everything runs from one function, parsed whole before it starts: editing this file while a matrix
# run is under way cannot change that run.
main() {
  mkdir -p "$CACHE/results"
  for version in "${VERSIONS[@]}"; do
    venv="$CACHE/$version"
    row="$CACHE/results/$version.tsv"
    if ! install_venv "$version" "$venv"; then
      printf '%s\t%s\t%s\n' "$version" "-" "install FAILED" > "$row"
      continue
    fi
    verl_version="$("$venv/bin/python" -c 'from importlib.metadata import version; print(version("verl"))')"
    cells=()
    args=()
    for group in "${TEST_GROUPS[@]}"; do
      name="${group%%|*}"
      if [[ "$version" == 0.8.0 && ( "$name" == "batched agent loop" || "$name" == "validation bootstrap" ) ]]; then
        cells+=("n/a (no V1 trainer)")  # CPU-backend patches, written for the V1 verls
        continue
      fi
      eval "args=(${group#*|})"
      mapfile -t -O "${#args[@]}" args < <(deselected_for "$version")
      log "$version: $name: pytest ${args[*]}"
      cells+=("$(run_group "$venv" "$CACHE/results/$version.${name//[^a-zA-Z0-9]/_}.xml" "${args[@]}")")
    done
    log "$version: verl API contract on the source"
    cells+=("$(run_contract "$version" "$venv")")
    if [[ $RUN_E2E -eq 1 ]]; then
      log "$version: check --e2e"
      cells+=("$(run_e2e "$version" "$venv")")
    else
      cells+=("not run")
    fi
    (IFS=$'\t'; echo "${version}"$'\t'"${verl_version}"$'\t'"${cells[*]}") > "$row"
  done
  print_table
}

main; exit $?
