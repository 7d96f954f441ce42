#!/bin/sh
# Mutation testing of one module with cosmic-ray 8.7.0, from a scratch copy of the committed tree
# (the working tree is never mutated). Usage, from the repository root, with the venv active:
#
#     tools/mutation/run.sh conv 80 9      # MODULE (a tools/mutation/MODULE.toml), SIZE, SEED
#
# init -> sample.py (annotation mutants out, a seeded sample of SIZE kept) -> baseline -> exec
# (one worker, nice 10) -> cr-report. The session stays in $MUTATION_DIR/MODULE/session.sqlite.
set -eu
module=$1 size=$2 seed=${3:-9}
repo=$(git rev-parse --show-toplevel)
work=${MUTATION_DIR:-/tmp/numcnn-mutation}/$module
rm -rf "$work"
mkdir -p "$work"
git -C "$repo" archive HEAD | tar -x -C "$work"
cp "$repo"/src/numcnn/backend/*.so "$work/src/numcnn/backend/" 2>/dev/null || true
cd "$work"
config=tools/mutation/$module.toml
cosmic-ray init "$config" session.sqlite
python tools/mutation/sample.py session.sqlite --size "$size" --seed "$seed"
nice -n 10 cosmic-ray baseline "$config"
nice -n 10 cosmic-ray exec "$config" session.sqlite
cr-report session.sqlite --show-pending | tail -n 3
