#!/usr/bin/env bash
# build-matrix.sh - build meltemi with every compiler and build type CI covers and run the
# unit tests of each build. Warnings are errors in every build (CMakeLists.txt adds -Werror),
# so a warning one compiler or optimisation level raises fails here.
#
#   tools/build-matrix.sh [-j JOBS] [CC...]        (default compilers: gcc clang)
#
# Builds go to build-matrix/<cc>-<type>/ and are incremental. Clang builds include the
# libFuzzer targets (tests/fuzz), whose seeds are replayed as the `fuzz` ctest label.
# Each build uses all JOBS; builds run one after another, which on a 2-core machine is
# faster than two half-speed builds side by side. Prints one line per build with its times.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc 2>/dev/null || echo 2)
if [[ "${1:-}" == "-j" ]]; then jobs=$2; shift 2; fi
compilers=("$@")
[[ ${#compilers[@]} -gt 0 ]] || compilers=(gcc clang)
types=(Debug RelWithDebInfo Release)

mkdir -p build-matrix
summary=()
for cc in "${compilers[@]}"; do
    for type in "${types[@]}"; do
        dir="build-matrix/$cc-$type"
        echo "=== matrix: $cc $type ($dir)"
        t0=$(date +%s)
        CC=$cc cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE="$type" >"$dir.configure.log" 2>&1 ||
            { cat "$dir.configure.log" >&2; exit 1; }
        cmake --build "$dir" -j"$jobs"
        t1=$(date +%s)
        ctest --test-dir "$dir" --output-on-failure -R '^(unit_|fuzz_)'
        t2=$(date +%s)
        summary+=("$(printf '%-6s %-15s build %4d s  tests %3d s' "$cc" "$type" $((t1 - t0)) $((t2 - t1)))")
    done
done
echo "=== matrix: all ${#summary[@]} builds clean and their unit tests pass"
printf '  %s\n' "${summary[@]}"
