#!/bin/sh
# Build mnnlite's C kernels with AddressSanitizer in a throw-away venv and run the mutation campaign
# (tools/fuzz_cli.py) against that build.  The repository is never built in place: a clean copy of HEAD
# is installed into the venv, and the campaign imports the installed package.
#
#   sh tools/asan_check.sh --mutants 2000 --workers 2        # arguments go to tools/fuzz_cli.py
#
# ASan reserves terabytes of address space, so the campaign runs without its RLIMIT_AS (--max-as 0);
# mnnlite's own --max-memory budget still bounds every allocation.  An ASan report aborts the worker,
# which the campaign counts as a "signal" outcome (and the exit code is then 1).
set -eu
REPO=$(cd "$(dirname "$0")/.." && pwd)
WORK=${ASAN_WORK:-$(mktemp -d -t mnnlite-asan-XXXXXX)}
mkdir -p "$WORK/src"
python3 -m venv "$WORK/venv"
"$WORK/venv/bin/pip" install -q numpy flatbuffers Pillow cython setuptools wheel
git -C "$REPO" archive HEAD | tar -x -C "$WORK/src"
CFLAGS="-fsanitize=address -fno-omit-frame-pointer -O1 -g" LDFLAGS="-fsanitize=address" \
    "$WORK/venv/bin/pip" install -q --no-build-isolation "$WORK/src"
LIBASAN=$(${CC:-cc} -print-file-name=libasan.so)
cd "$WORK"
MNNLITE_FUZZ_INSTALLED=1 LD_PRELOAD="$LIBASAN" ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 \
    "$WORK/venv/bin/python" "$REPO/tools/fuzz_cli.py" --max-as 0 "$@"
