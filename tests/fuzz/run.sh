#!/usr/bin/env bash
# Builds every fuzz target and runs each for FUZZ_SECONDS (default 10) seconds from its seed
# corpus. Exits non-zero if a target crashes, hangs or fails to build.
#
#   tests/fuzz/run.sh                     # every target, 10 s each
#   FUZZ_SECONDS=600 tests/fuzz/run.sh frame_data train_spec   # longer, chosen targets
#
# Needs the nightly toolchain (libFuzzer's instrumentation) and cargo-fuzz, which it installs
# if missing. Without nightly it says so and skips, except in CI (CI=true), where it fails.
# Inputs found while fuzzing go to a scratch corpus under the target dir, not into the committed
# seeds; a crashing input is kept under $FUZZ_WORK/artifacts/<target>/ and its path printed.
#
# Environment: FUZZ_SECONDS, FUZZ_TARGET_DIR (default target/fuzz in the repository),
# FUZZ_SANITIZER (default none: the code under test is safe Rust, and without AddressSanitizer
# both the build and the runs are about twice as fast; set `address` to use it),
# FUZZ_JOBS (parallel fuzzing jobs per target, default 1).
set -euo pipefail
cd "$(dirname "$0")/../.."

seconds="${FUZZ_SECONDS:-10}"
target_dir="${FUZZ_TARGET_DIR:-$PWD/target/fuzz}"
sanitizer="${FUZZ_SANITIZER:-none}"
jobs="${FUZZ_JOBS:-1}"
work="${FUZZ_WORK:-$target_dir/fuzz-work}"
fuzz_dir=tests/fuzz
# Everything built here (cargo-fuzz included) goes to the fuzz target dir, never to the
# workspace's: nightly and instrumented artifacts would only evict the stable build's.
export CARGO_TARGET_DIR="$target_dir"

skip_or_fail() {
  echo "fuzz: $1" >&2
  if [ "${CI:-}" = "true" ]; then
    echo "fuzz: CI=true, so this is a failure" >&2
    exit 1
  fi
  echo "fuzz: skipped (set CI=true to make this an error)" >&2
  exit 0
}

if ! cargo +nightly --version >/dev/null 2>&1; then
  if [ "${CI:-}" = "true" ] && command -v rustup >/dev/null 2>&1; then
    echo "fuzz: installing the nightly toolchain" >&2
    rustup toolchain install nightly --profile minimal >&2 || skip_or_fail "could not install the nightly toolchain"
  else
    skip_or_fail "the nightly toolchain is not installed (rustup toolchain install nightly); fuzzing needs it"
  fi
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz" >&2
  cargo install --locked cargo-fuzz >&2 || skip_or_fail "could not install cargo-fuzz"
fi

flags=(--fuzz-dir "$fuzz_dir" --sanitizer "$sanitizer" --codegen-units 16 --target-dir "$target_dir")

if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo +nightly fuzz list --fuzz-dir "$fuzz_dir")
fi

start=$(date +%s)
echo "fuzz: building ${#targets[@]} targets (sanitizer: $sanitizer)" >&2
# One build of the whole crate; `fuzz run` below finds every binary up to date.
cargo +nightly fuzz build "${flags[@]}" >&2
built=$(date +%s)
echo "fuzz: built in $((built - start)) s; running each target for ${seconds} s" >&2

parallel=()
if [ "$jobs" -gt 1 ]; then
  # libFuzzer's job mode writes fuzz-<n>.log files into the working directory.
  parallel=(-jobs="$jobs" -workers="$jobs")
fi

failed=()
for t in "${targets[@]}"; do
  mkdir -p "$work/corpus/$t" "$work/artifacts/$t" "$fuzz_dir/corpus/$t"
  log="$work/$t.log"
  # New inputs go to the scratch corpus (first directory); the committed seeds are only read.
  if cargo +nightly fuzz run "${flags[@]}" "$t" "$work/corpus/$t" "$fuzz_dir/corpus/$t" -- \
      -max_total_time="$seconds" -timeout=20 -rss_limit_mb=2048 "${parallel[@]}" \
      -print_final_stats=1 -artifact_prefix="$work/artifacts/$t/" >"$log" 2>&1; then
    execs=$(grep -ho 'stat::number_of_executed_units: *[0-9]*' "$log" | awk '{s += $2} END {print s + 0}')
    echo "fuzz: $t ok ($execs runs)" >&2
  else
    failed+=("$t")
    echo "fuzz: $t FAILED; last lines of $log:" >&2
    tail -n 40 "$log" >&2
    ls "$work/artifacts/$t/" >&2 2>/dev/null || true
  fi
done
echo "fuzz: done in $(($(date +%s) - start)) s" >&2

if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz: crashes in: ${failed[*]} (inputs under $work/artifacts/; reproduce with" >&2
  echo "  cargo +nightly fuzz run ${flags[*]} <target> <input>)" >&2
  exit 1
fi
