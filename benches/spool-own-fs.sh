#!/bin/sh
# benches/spool.rs on an ext4 file system of the spool's own: an image file on this machine's
# disk, formatted with ext4's defaults (journal on) and loop-mounted, so that the commit mode
# `file-system` (syncfs) can be measured beside `per-file` on the same disk.
#
#   benches/spool-own-fs.sh [MODE...]        MODE: per-file (default: both), file-system
#   SPOOL_BENCH_BIN=path/to/spool-bench benches/spool-own-fs.sh   runs that binary instead of
#                                            cargo bench (e.g. one built from an older commit)
#
# Needs root (mount). Removes the image afterwards.
set -eu
cd "$(dirname "$0")/.."
modes=${*:-per-file file-system}
mkdir -p target/tmp
img=$(mktemp target/tmp/spool-own-fs.XXXXXX.img)
mnt=$(mktemp -d /tmp/spool-own-fs.XXXXXX)
cleanup() {
    umount "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true
    rmdir "$mnt" 2>/dev/null || true
    rm -f "$img"
}
trap cleanup EXIT INT TERM
truncate -s 8G "$img"
mkfs.ext4 -q -F "$img"
mount -o loop "$img" "$mnt"
echo "spool-own-fs: ext4 image $img on $(df --output=source "$mnt" | tail -1) at $mnt"
if [ -z "${SPOOL_BENCH_BIN:-}" ]; then
    cargo bench --bench spool --no-run
fi
for mode in $modes; do
    echo "=== commit mode $mode"
    if [ -n "${SPOOL_BENCH_BIN:-}" ]; then
        POSTRIDER_BENCH_DIR=$mnt POSTRIDER_BENCH_COMMIT=$mode "$SPOOL_BENCH_BIN" --bench
    else
        POSTRIDER_BENCH_DIR=$mnt POSTRIDER_BENCH_COMMIT=$mode cargo bench --bench spool
    fi
done
