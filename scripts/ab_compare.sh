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
#   FAMILY  a benchmark family timed on the GPU (rope, attention, norm, ...;
#           not all, overhead or allreduce)
#   FILTER  a regular expression on "op label", as `python -m hpc_ops.bench
#           FAMILY --list` prints them
#   REV     a git commit or branch; WORKTREE: the working tree as it is
#           (tracked and untracked files that git does not ignore); or a
#           folder holding a source tree (e.g. made by `git archive REV | tar
#           -x -C DIR`, for a checkout without .git; a name that is both a
#           git revision and a folder is taken as the revision). A REV given
#           twice (an A/A run) gets a numbered tag.
#   e.g. bash scripts/ab_compare.sh rope '1x16K|4x2K' main WORKTREE
# Environment: ROUNDS (default 2), REPS (timed replays per case and round,
# default 60), AB_DIR (work folder, default bench/ab), PYTHON, and
# HPC_OPS_WHEELS as for scripts/setup.sh. Each round's results stay under
# AB_DIR/<tag>/round<k>/, the tag being the REV's name (a folder's base
# name) with characters other than A-Z a-z 0-9 . _ - made _. Exit status:
# 0, 1 when a check failed, 2 on bad usage or a build or run that failed.
set -euo pipefail
PY=${PYTHON:-python3}
if (($# < 3)); then
  echo "usage: bash scripts/ab_compare.sh FAMILY FILTER REV [REV ...]" >&2
  exit 2
fi
family=$1
filter=$2
shift 2
case $family in
  all | overhead | allreduce)
    echo "ab_compare: FAMILY must be one family timed on the GPU, not $family" >&2
    exit 2
    ;;
esac
rounds=${ROUNDS:-2}
reps=${REPS:-60}
# (folders and AB_DIR are taken relative to where the script was called from)
dir=$(mkdir -p "${AB_DIR:-bench/ab}" && cd "${AB_DIR:-bench/ab}" && pwd)
revs=("$@")
folders=()
for rev in "$@"; do
  if [[ $rev != WORKTREE && -d $rev ]]; then folders+=("$(cd "$rev" && pwd)"); else folders+=(""); fi
done
cd "$(dirname "$0")/.."

bash scripts/setup.sh

# ---- sources: one folder per revision
tags=()
for i in "${!folders[@]}"; do
  rev=${revs[$i]}
  name=$rev
  if [[ -n ${folders[$i]} ]]; then name=$(basename "${folders[$i]}"); fi
  tag=$(printf '%s' "$name" | tr -c 'A-Za-z0-9._-' '_')
  base=$tag
  for ((n = 2; ; ++n)); do  # a REV given twice: tag, tag-2, ...
    taken=0
    for t in "${tags[@]}"; do if [[ $t == "$tag" ]]; then taken=1; fi; done
    if ((!taken)); then break; fi
    tag=$base-$n
  done
  src=$dir/$tag/src
  rm -rf "${dir:?}/${tag:?}"
  mkdir -p "$src"
  if [[ $rev == WORKTREE ]]; then
    git ls-files -co --exclude-standard | while IFS= read -r f; do
      if [[ -e $f ]]; then printf '%s\n' "$f"; fi  # (not files deleted in the tree)
    done | tar -T - -cf - | tar -x -C "$src"
  elif commit=$(git rev-parse -q --verify "$rev^{commit}" 2> /dev/null); then
    git archive "$commit" | tar -x -C "$src"
  elif [[ -n ${folders[$i]} ]]; then
    (cd "${folders[$i]}" && tar --exclude=./build --exclude=./bench -cf - .) | tar -x -C "$src"
  else
    echo "ab_compare: $rev is neither WORKTREE, a git revision nor a folder" >&2
    exit 2
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
    exit 2
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
    # (a failed check still writes its results, and the table marks it; a
    # run that wrote none stops the comparison. The result files' git_commit
    # is this checkout's HEAD, not the REV's.)
    PYTHONPATH="$dir/$tag/site" "$PY" -m hpc_ops.bench "$family" --ours-only \
      --reps "$reps" --filter "$filter" --out "$out" || true
    found=0
    for f in "$out/${family}"_[0-9]*.json; do
      if [[ -e $f ]]; then
        runs+=("$tag=$f")
        found=1
      fi
    done
    if ((!found)); then
      echo "ab_compare: the run of $tag wrote no results (see the output above)" >&2
      exit 2
    fi
  done
done
PYTHONPATH="$dir/${tags[0]}/site" "$PY" -m hpc_ops.bench.compare "${runs[@]}"
