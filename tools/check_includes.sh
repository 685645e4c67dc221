#!/bin/sh
# SPDX-License-Identifier: MIT
# Keeps the module layering of DESIGN.md: a module may include only the public
# headers of modules below it. Exits non-zero and names the offending line.
top=${1:-.}
allowed() {
    case $1 in
    base) echo "base" ;;
    clip) echo "base clip" ;;
    image) echo "base image" ;;
    index) echo "base index" ;;
    store) echo "base store" ;;
    replica) echo "base index store replica" ;;
    fetch) echo "base fetch" ;;
    ingest) echo "base fetch image clip store index ingest" ;;
    sync) echo "base fetch image clip store index ingest sync" ;;
    search) echo "base clip image index store search" ;;
    # server.h promises that only this module knows HTTP and that it knows
    # nothing else: the backend vtable is how it reaches the library
    server) echo "base server" ;;
    # libimgsearch: over the modules, below cli (the command and its
    # server open, search, add and remove through it; server itself stays
    # HTTP-only and does not include it)
    lib) echo "base clip image index store replica fetch ingest search" ;;
    *) echo "" ;;
    esac
}
bad=0
for dir in "$top"/src/*/ "$top"/include/imgsearch; do
    [ -d "$dir" ] || continue
    case $dir in
    */include/imgsearch) continue ;;
    esac
    mod=$(basename "$dir")
    [ "$mod" = cli ] && continue
    ok=$(allowed "$mod")
    for f in "$dir"*.c "$dir"*.h "$dir"*.cpp; do
        [ -f "$f" ] || continue
        grep -n '#include "imgsearch/' "$f" | while IFS= read -r line; do
            h=$(printf '%s' "$line" | sed 's/.*imgsearch\/\([a-z_]*\)\.h.*/\1/')
            case " $ok " in
            *" $h "*) ;;
            *) echo "$f: module '$mod' must not include imgsearch/$h.h: $line"; echo x >> "${TMPDIR:-/tmp}/ims_inc_bad.$$" ;;
            esac
        done
    done
    # public headers: include/imgsearch/<mod>.h follows the same rule
    h="$top/include/imgsearch/$mod.h"
    if [ -f "$h" ]; then
        grep -n '#include "imgsearch/' "$h" | while IFS= read -r line; do
            inc=$(printf '%s' "$line" | sed 's/.*imgsearch\/\([a-z_]*\)\.h.*/\1/')
            case " $ok " in
            *" $inc "*) ;;
            *) echo "$h: must not include imgsearch/$inc.h"; echo x >> "${TMPDIR:-/tmp}/ims_inc_bad.$$" ;;
            esac
        done
    fi
done
# libimgsearch's private header is for the library and the command line
# only (no module below them may reach up into the library)
for f in "$top"/src/*/*.c "$top"/src/*/*.h "$top"/src/*/*.cpp; do
    [ -f "$f" ] || continue
    case $f in
    "$top"/src/lib/* | "$top"/src/cli/*) continue ;;
    esac
    if grep -n '#include "libimgsearch_int.h"' "$f"; then
        echo "$f: only src/lib and src/cli may include libimgsearch_int.h"
        echo x >> "${TMPDIR:-/tmp}/ims_inc_bad.$$"
    fi
done
if [ -f "${TMPDIR:-/tmp}/ims_inc_bad.$$" ]; then
    rm -f "${TMPDIR:-/tmp}/ims_inc_bad.$$"
    exit 1
fi
echo "include direction ok"
