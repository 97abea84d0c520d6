#!/usr/bin/env bash
# Runs every fuzz target (or the ones named) for a bounded time, one at a time, one job each.
#
#   fuzz/run.sh [seconds-per-target] [target...]
#
# Environment:
#   FUZZ_TARGET_DIR  cargo target directory for the instrumented build (default fuzz/target)
#   FUZZ_SKIP        space-separated targets to leave out
#   FUZZ_MERGE=1     afterwards, merge what the run found interesting into fuzz/corpus/<target>
#                    (libFuzzer -merge=1 keeps only inputs that add coverage)
#
# New inputs go to a scratch directory, so the corpora in the repository change only with
# FUZZ_MERGE=1. Crashes are written to fuzz/artifacts/<target>/; the script reports every
# target that crashed and exits non-zero. Without cargo-fuzz it says so and exits 0.
set -euo pipefail
cd "$(dirname "$0")"

seconds=${1:-60}
shift || true
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz/run.sh: cargo-fuzz is not installed (cargo install cargo-fuzz); skipping"
    exit 0
fi
# cargo-fuzz passes unstable rustc flags; RUSTC_BOOTSTRAP lets the stable toolchain take them.
# No sanitizer: the code under test forbids `unsafe`, so ASan adds cost and finds nothing.
export RUSTC_BOOTSTRAP=1
target_dir=${FUZZ_TARGET_DIR:-target}
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo fuzz list)
fi

cargo fuzz build -s none --target-dir "$target_dir"

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
failed=()
for t in "${targets[@]}"; do
    if [[ " ${FUZZ_SKIP:-} " == *" $t "* ]]; then
        echo "== $t: skipped (FUZZ_SKIP)"
        continue
    fi
    echo "== $t: ${seconds}s"
    mkdir -p "corpus/$t" "artifacts/$t" "$scratch/$t"
    if ! cargo fuzz run -s none --target-dir "$target_dir" "$t" "$scratch/$t" "corpus/$t" -- \
        -max_total_time="$seconds" -timeout=20 -rss_limit_mb=2048 -print_final_stats=1 \
        2>&1 | grep -Ev '^#[0-9]+\s+(NEW|REDUCE|pulse)'; then
        failed+=("$t")
        continue
    fi
    if [ "${FUZZ_MERGE:-0}" = 1 ]; then
        cargo fuzz run -s none --target-dir "$target_dir" "$t" "corpus/$t" "$scratch/$t" -- \
            -merge=1 2>&1 | tail -n 2
    fi
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz/run.sh: crashes in: ${failed[*]} (inputs under fuzz/artifacts/)"
    exit 1
fi
echo "fuzz/run.sh: no crashes"
