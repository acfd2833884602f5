#!/usr/bin/env bash
# Fuzzes every parser of untrusted input with libFuzzer, on the stable
# toolchain (see FUZZING.md for why this and not cargo-fuzz's defaults).
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#   FUZZ_RUNS=10000000 scripts/fuzz.sh 0 [TARGET...]   # a number of runs instead
#
# Builds the targets in fuzz/ with SanitizerCoverage instrumentation (the
# flags cargo-fuzz passes with `--sanitizer none`, all stable), replays every
# saved regression input, then runs each target for SECONDS_PER_TARGET
# (default 10) on its corpus in target/fuzz/corpus/. A crash stops the run
# with a non-zero exit; the input that caused it is in target/fuzz/artifacts/
# and belongs in fuzz/regressions/<target>/ once fixed.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-10}
shift || true
all=(xfcc percent request_path spiffe_id x509_svid jwt_svid jwt_claims bundle check_request rules_file suite_file config_file governance_file ssf_set)
targets=("${@:-${all[@]}}")
if [ "$#" -eq 0 ]; then targets=("${all[@]}"); fi

host=$(rustc -vV | sed -n 's/^host: //p')
export CARGO_TARGET_DIR="$PWD/target/fuzz/build"
# With an explicit --target, these reach the fuzzed code only, never build
# scripts or proc macros.
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table -Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks"
cargo build --release --locked --manifest-path fuzz/Cargo.toml --target "$host" --bins

bin_dir="$CARGO_TARGET_DIR/$host/release"
report="target/fuzz/report.txt"
: > "$report"
for t in "${targets[@]}"; do
  bin="$bin_dir/$t"
  corpus="target/fuzz/corpus/$t"
  artifacts="target/fuzz/artifacts/$t/"
  mkdir -p "$corpus" "$artifacts"
  if compgen -G "fuzz/regressions/$t/*" > /dev/null; then
    "$bin" -runs=1 fuzz/regressions/"$t"/* > "target/fuzz/$t.regressions.log" 2>&1 || {
      echo "fuzz: $t: a saved regression input fails again:"; tail -40 "target/fuzz/$t.regressions.log"; exit 1; }
  fi
  seeds=()
  if [ -d "fuzz/seeds/$t" ]; then seeds=("fuzz/seeds/$t"); fi
  dict=()
  if [ -f "fuzz/dictionaries/$t.dict" ]; then dict=(-dict="fuzz/dictionaries/$t.dict"); fi
  log="target/fuzz/$t.log"
  if [ -n "${FUZZ_RUNS:-}" ]; then limit=(-runs="$FUZZ_RUNS"); else limit=(-max_total_time="$seconds"); fi
  started=$(date +%s)
  if ! "$bin" "${limit[@]}" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 "${dict[@]}" \
      -artifact_prefix="$artifacts" "$corpus" "${seeds[@]}" > "$log" 2>&1; then
    echo "fuzz: $t found a crash:"; tail -60 "$log"; exit 1
  fi
  took=$(( $(date +%s) - started ))
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  echo "$t: ${execs:-0} executions in ${took}s, 0 crashes, corpus $(ls "$corpus" | wc -l) inputs" | tee -a "$report"
done
