#!/usr/bin/env bash
# ../shared/peerbench side by side with more than one Tidings: this checkout with one and
# with two web processes, an earlier release, and the floor, in one interleaved run.
#
#   OLD_TIDINGS=/path/to/old-venv/bin/tidings bench/peerbench_releases.sh --reps 3 --scenarios intake,delivery
#
# OLD_TIDINGS: the `tidings` script of an earlier release installed in a venv of its own
# (e.g. `git worktree add /tmp/old <commit> && python3 -m venv /tmp/venv-old &&
# /tmp/venv-old/bin/pip install /tmp/old`); leave it unset to compare this checkout only.
# Every target runs as deployed (INFO JSON logs) with the same settings as
# ../shared/peerbench/tidings.sh. Other arguments go to compare.sh.
set -euo pipefail
PROJECT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH="${PEERBENCH_BENCH:-$PROJECT/../shared/peerbench/bench}"
NEW="$PROJECT/.venv/bin/tidings"
[[ -x "$NEW" ]] || { echo "no $NEW: install the project into .venv first" >&2; exit 2; }

target() {  # target NAME CWD TIDINGS WEB_ARGS
  local name="$1" cwd="$2" tidings="$3" web_args="$4"
  printf '%s\n' --target "$name" --cwd "$cwd" --url 'http://127.0.0.1:{port}' \
    --web "exec bash $BENCH/tidings_target.sh $tidings web $web_args" \
    --worker "exec bash $BENCH/tidings_target.sh $tidings worker" \
    --env 'TIDINGS_REDIS_URL={redis_url}' \
    --env TIDINGS_HTTP__HOST=127.0.0.1 --env 'TIDINGS_HTTP__PORT={port}' \
    --env 'TIDINGS_SECRET_KEY={code_key}' \
    --env 'TIDINGS_EMAIL__HOST={smtp_host}' --env 'TIDINGS_EMAIL__PORT={smtp_port}' \
    --env TIDINGS_EMAIL__SECURITY=none \
    --env 'TIDINGS_PUBLIC_URL=http://127.0.0.1:{port}' \
    --env TIDINGS_CODES__SITE_SENDS_PER_HOUR=1000000000 \
    --env 'BENCH_SITE={site}' --env 'BENCH_SECRET={secret}' --env 'BENCH_TMP={tmp}'
}

args=()
if [[ -n "${OLD_TIDINGS:-}" ]]; then
  mapfile -t -O "${#args[@]}" args < <(target tidings-old "$(mktemp -d)" "$OLD_TIDINGS" "--workers 2")
fi
mapfile -t -O "${#args[@]}" args < <(target tidings-1 "$PROJECT" "$NEW" "--workers 1")
mapfile -t -O "${#args[@]}" args < <(target tidings-2 "$PROJECT" "$NEW" "--workers 2")
exec bash "$BENCH/compare.sh" "${args[@]}" --builtin floor \
  --priority "${PEERBENCH_PRIORITY:--10}" "$@"
