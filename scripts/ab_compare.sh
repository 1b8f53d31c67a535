#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# A/B benchmark of revisions on one GPU: builds each revision into its own
# folder, times hpc_ops alone on the chosen cases in alternating rounds
# (python -m hpc_ops.bench FAMILY --ours-only: CUDA-graph timing, every
# result checked against the reference), so drift of clocks and temperature
# falls on every build alike, and prints the comparison
# (python -m hpc_ops.bench.compare: each build's fastest round, changes
# against the first revision).
#
# Usage: bash scripts/ab_compare.sh FAMILY FILTER REV [REV ...]
#   FAMILY  a benchmark family (rope, attention, norm, ...)
#   FILTER  a regular expression on "op label", as `python -m hpc_ops.bench
#           FAMILY --list` prints them
#   REV     a git commit or branch; WORKTREE: the working tree as it is
#           (tracked and untracked files that git does not ignore); or a
#           folder holding a source tree (e.g. made by `git archive REV | tar
#           -x -C DIR` where the GPU machine has no git history)
#   e.g. bash scripts/ab_compare.sh rope '1x16K|4x2K' main WORKTREE
# Environment: ROUNDS (default 2), REPS (timed replays per case and round,
# default 60), AB_DIR (work folder, default bench/ab), PYTHON, and
# HPC_OPS_WHEELS as for scripts/setup.sh. Each round's results stay under
# AB_DIR/<rev>/round<k>/.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if (($# < 3)); then
  echo "usage: bash scripts/ab_compare.sh FAMILY FILTER REV [REV ...]" >&2
  exit 2
fi
family=$1
filter=$2
shift 2
rounds=${ROUNDS:-2}
reps=${REPS:-60}
dir=$(mkdir -p "${AB_DIR:-bench/ab}" && cd "${AB_DIR:-bench/ab}" && pwd)

bash scripts/setup.sh

# ---- sources: one folder per revision
tags=()
for rev in "$@"; do
  name=$rev
  if [[ -d $rev ]]; then name=$(basename "$(cd "$rev" && pwd)"); fi
  tag=$(printf '%s' "$name" | tr -c 'A-Za-z0-9._-' '_')
  src=$dir/$tag/src
  rm -rf "${dir:?}/${tag:?}"
  mkdir -p "$src"
  if [[ -d $rev ]]; then
    (cd "$rev" && tar --exclude=./build --exclude=./bench -cf - .) | tar -x -C "$src"
  elif [[ $rev == WORKTREE ]]; then
    git ls-files -co --exclude-standard | while IFS= read -r f; do
      if [[ -e $f ]]; then printf '%s\n' "$f"; fi  # (not files deleted in the tree)
    done | tar -T - -cf - | tar -x -C "$src"
  else
    git archive "$(git rev-parse --verify "$rev^{commit}")" | tar -x -C "$src"
  fi
  tags+=("$tag")
done

# ---- builds, in parallel
pids=()
for tag in "${tags[@]}"; do
  "$PY" -m pip install --disable-pip-version-check -q --no-build-isolation --no-deps \
    --target "$dir/$tag/site" "$dir/$tag/src" > "$dir/$tag/build.log" 2>&1 &
  pids+=($!)
done
for i in "${!pids[@]}"; do
  if ! wait "${pids[$i]}"; then
    echo "ab_compare: the build of ${tags[$i]} failed (see $dir/${tags[$i]}/build.log)" >&2
    exit 1
  fi
done

# ---- rounds: the builds in turn, the order reversed every other round
runs=()
for ((r = 1; r <= rounds; ++r)); do
  order=("${tags[@]}")
  if ((r % 2 == 0)); then
    order=()
    for ((i = ${#tags[@]} - 1; i >= 0; --i)); do order+=("${tags[$i]}"); done
  fi
  for tag in "${order[@]}"; do
    out=$dir/$tag/round$r
    echo "== ab_compare: $tag, round $r of $rounds" >&2
    # (from the work folder, so `import hpc_ops` finds this build; a failed
    # check still writes its results, and the table marks it)
    (cd "$dir" && PYTHONPATH="$dir/$tag/site" "$PY" -m hpc_ops.bench "$family" --ours-only \
      --no-compile --reps "$reps" --filter "$filter" --out "$out") || true
    for f in "$out/${family}"_[0-9]*.json; do
      if [[ -e $f ]]; then runs+=("$tag=$f"); fi
    done
  done
done
if ((${#runs[@]} == 0)); then
  echo "ab_compare: no results (see the output above)" >&2
  exit 1
fi
(cd "$dir" && PYTHONPATH="$dir/${tags[0]}/site" "$PY" -m hpc_ops.bench.compare "${runs[@]}")
