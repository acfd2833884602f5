#!/usr/bin/env bash
# Instructions per check of this build (benches/instructions.rs), counted by
# callgrind: the count of 2N iterations less that of N, over N. The SVID
# cache key's SHA-256 is left out: under valgrind it runs sha2's portable
# code (valgrind has no SHA extensions), where a check runs the x86 SHA
# instructions, and it hashes a certificate whose length changes with each
# run's random key. What is left still moves by up to about 1% from run to
# run (the caches' upkeep runs on a clock, and valgrind slows the clock's
# reader 50-fold): compare medians of a few runs.
#
#   scripts/instructions.sh                       # this build
#   INSTRUCTIONS_BASELINE_BIN=/tmp/instructions-before scripts/instructions.sh
#                                                 # and another build's binary, with the ratio
#   INSTRUCTIONS_ITERATIONS=2000 (default)
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v valgrind >/dev/null; then
  apt-get update -q && apt-get install -y -q valgrind
fi
bin=$(cargo bench --bench instructions --no-run 2>&1 | sed -n 's/.*Executable .*(\(.*\))$/\1/p' | tail -1)
n=${INSTRUCTIONS_ITERATIONS:-2000}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# count BIN CASE ITERATIONS: the instructions callgrind collected.
count() {
  valgrind --tool=callgrind --callgrind-out-file="$out/cg" --collect-atstart=no \
    --toggle-collect='*counted_checks*' --toggle-collect='*counted_evaluations*' \
    --toggle-collect='<D as digest::digest::Digest>::digest' \
    "$1" --case "$2" --iterations "$3" 2>&1 | sed -n 's/.*Collected : //p'
}

# per_check BIN CASE: instructions per iteration.
per_check() {
  local one two
  one=$(count "$1" "$2" "$n")
  two=$(count "$1" "$2" $((2 * n)))
  if [ -z "$one" ] || [ -z "$two" ]; then echo "-"; return; fi
  echo $(( (two - one) / n ))
}

cases=(check/allowed check/denied_no_allow_rule check/denied_by_rule_regex
       kubernetes/string_equals kubernetes/in_cidr_literal kubernetes/two_variable_exists)
if [ -n "${INSTRUCTIONS_BASELINE_BIN:-}" ]; then
  printf '%-32s %12s %12s %8s\n' case baseline this ratio
  for c in "${cases[@]}"; do
    b=$(per_check "$INSTRUCTIONS_BASELINE_BIN" "$c"); t=$(per_check "$bin" "$c")
    r=$( [ "$b" != "-" ] && [ "$t" != "-" ] && python3 -c "print(f'{$t/$b:.4f}')" || echo "-")
    printf '%-32s %12s %12s %8s\n' "$c" "$b" "$t" "$r"
  done
else
  printf '%-32s %12s\n' case instructions
  for c in "${cases[@]}"; do printf '%-32s %12s\n' "$c" "$(per_check "$bin" "$c")"; done
fi
echo "binary: $bin"
