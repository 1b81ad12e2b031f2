#!/usr/bin/env bash
# Regenerates the pictures in this folder from real runs of the examples:
# each must-have workflow (and the typed branch) right after registration,
# mid-run and finished.
# The containers example needs Podman and the images of .ci/images (with
# CONTAINERS_CONF=.ci/containers.conf where Podman needs it, as here).
# Usage (from the repository root): bash docs/pictures/make.sh [EXAMPLE…]
# (every example below by default; CARGO_TARGET_DIR is honoured)
set -euo pipefail
cd "$(dirname "$0")/../.."
out=docs/pictures
db=$(mktemp -d)/orch.db
export ORCH_DB=$db
cargo build --quiet --examples --bin orch
target=${CARGO_TARGET_DIR:-target}
orch=$target/debug/orch
all=(static_pipeline random_branch random_map typed_branch containers late_merge loop_until)
for ex in "${@:-${all[@]}}"; do
  args=()
  case $ex in
    random_branch) env=(ORCH_EXAMPLE_SEED=1) ;;
    typed_branch) env=(); args=(--value large) ;;
    random_map) env=(ORCH_EXAMPLE_K=3) ;;
    late_merge) env=(ORCH_EXAMPLE_N=2 ORCH_EXAMPLE_SEED=3) ;;
    *) env=() ;;
  esac
  env "${env[@]}" "$target/debug/examples/$ex" "${args[@]}" >/dev/null 2>&1
  # Mid-run: the moment the first node that adds nodes (or the second
  # node) has just started.
  last=$("$orch" export latest --format json | python3 -c 'import json,sys; print(json.load(sys.stdin)["event"])')
  mid=$("$orch" events latest | python3 -c '
import json, sys
events = [json.loads(l) for l in sys.stdin]
batches = [e["seq"] for e in events if e["event"] == "batch_committed"]
# after the first batch a task sent, or halfway for a static run
print(batches[1] if len(batches) > 1 else events[len(events) // 2]["seq"])
')
  "$orch" export latest --registered --format svg -o "$out/$ex-registered.svg"
  "$orch" export latest --at "$mid" --format svg -o "$out/$ex-midrun.svg"
  "$orch" export latest --at "$last" --format svg -o "$out/$ex-finished.svg"
  # A loop is drawn collapsed by default; every iteration with --expand.
  if [ "$ex" = loop_until ]; then
    "$orch" export latest --at "$last" --expand --format svg -o "$out/$ex-expanded.svg"
  fi
done
echo "pictures written to $out"
