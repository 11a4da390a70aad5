#!/usr/bin/env bash
# check-layering.sh - the include arrows of docs/design ("server -> proxy/<protocol> -> core
# -> (luajit, protocols)") checked on the #include "..." lines of every .c/.h file:
#   1. protocols/ includes nothing from runtime/
#   2. runtime/core/ includes nothing from runtime/proxy/ or runtime/server/
#   3. no two runtime/proxy/<x>/ folders include each other (no cycle between those folders)
#   4. no include cycle between runtime modules (x.c and x.h are one module, x; a cycle means
#      two .c files that need each other, which the refactor must untangle)
#
#   tools/check-layering.sh            strict: print violations, exit 1 if there are any
#   tools/check-layering.sh --report   print them, exit 0
#
# CI runs the strict mode (the runtime refactor removed the last violations).
set -euo pipefail
cd "$(dirname "$0")/.."
strict=1
if [[ "${1:-}" == "--report" ]]; then strict=0; fi

# "file target" for every quoted include; the target resolved from the root (the build's
# include path) or, failing that, from the including file's folder.
edges() {
    grep -rHE '^[[:space:]]*#[[:space:]]*include[[:space:]]*"' --include='*.c' --include='*.h' \
        runtime protocols 2>/dev/null |
        sed -E 's/^([^:]+):[[:space:]]*#[[:space:]]*include[[:space:]]*"([^"]+)".*/\1 \2/' |
        while read -r file inc; do
            if [[ -e "$inc" ]]; then
                echo "$file $inc"
            elif [[ -e "$(dirname "$file")/$inc" ]]; then
                echo "$file $(realpath -m --relative-to=. "$(dirname "$file")/$inc")"
            fi # system or generated header (lua_embedded.c's): not ours to check
        done
}
all=$(edges)
violations=0
violation() { echo "layering: $*"; violations=$((violations + 1)); }

# tsort prints the members of each loop it breaks; turn them into "a -> b -> a" lines.
cycles() { { tsort 2>&1 >/dev/null || true; } | awk '/input contains a loop/ { if (c) print c " -> " f; c = ""; next }
    { sub(/^tsort: /, ""); if (c == "") { c = $0; f = $0 } else c = c " -> " $0 }
    END { if (c) print c " -> " f }'; }

while read -r file inc; do
    if [[ "$file" == protocols/* && "$inc" == runtime/* ]]; then
        violation "$file includes $inc (protocols/ must not include runtime/)"
    fi
    if [[ "$file" == runtime/core/* && ("$inc" == runtime/proxy/* || "$inc" == runtime/server/*) ]]; then
        violation "$file includes $inc (runtime/core/ must not include proxy/ or server/)"
    fi
done <<<"$all"

proxy_cycles=$(awk '$1 ~ /^runtime\/proxy\/[^/]+\// && $2 ~ /^runtime\/proxy\/[^/]+\// {
        split($1, a, "/"); split($2, b, "/"); if (a[3] != b[3]) print a[3], b[3] }' <<<"$all" | sort -u | cycles)
while read -r c; do
    if [[ -n "$c" ]]; then violation "runtime/proxy/ folders include each other: $c"; fi
done <<<"$proxy_cycles"

module_cycles=$(awk '$1 ~ /^runtime\// && $2 ~ /^runtime\// {
        a = $1; b = $2; sub(/\.[ch]$/, "", a); sub(/\.[ch]$/, "", b); if (a != b) print a, b }' <<<"$all" | sort -u | cycles)
if [[ -z "$module_cycles" ]]; then
    echo "layering: no include cycles between runtime files"
else
    while read -r c; do violation "include cycle between runtime modules: $c"; done <<<"$module_cycles"
fi

if [[ $violations -eq 0 ]]; then
    echo "layering: ok"
    exit 0
fi
echo "layering: $violations violation(s)"
if [[ $strict -eq 1 ]]; then exit 1; fi
echo "layering: --report mode, not failing"
exit 0
