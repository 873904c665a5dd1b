#!/usr/bin/env bash
# Commits the chunk tree's status changes and pushes them to the branch the workflow
# runs on. Several runs (detection, callbacks) push to the same branch, so a rejected
# push is expected now and then: fetch, rebase onto the new tip, and try again.
#
# Usage: push-status-changes.sh MESSAGE [REAPPLY_COMMAND...]
#   With a REAPPLY_COMMAND (an idempotent step such as `cargo xtask apply-callback`), a
#   rebase conflict is resolved by resetting to the remote tip and running the command
#   again instead of failing.
set -euo pipefail

message=$1
shift
reapply=("$@")
base=pending_compression
# Seconds between attempts grow from this (tests set 0).
delay=${PUSH_RETRY_BASE_DELAY:-2}
branch=${GITHUB_REF_NAME:?GITHUB_REF_NAME is not set}

if [ "${GITHUB_REF_TYPE:-branch}" != "branch" ]; then
  echo "::error::this run is on ${GITHUB_REF_TYPE} ${branch}, not a branch; nothing can be pushed"
  exit 1
fi

if [ ! -d "$base" ]; then
  echo "No ${base}/ in this checkout; nothing to commit."
  exit 0
fi

git config user.name "github-actions[bot]"
git config user.email "41898282+github-actions[bot]@users.noreply.github.com"

# Stages and commits; returns 1 when there is nothing to commit. Called as a condition,
# where `set -e` does not apply, so failures exit explicitly.
commit() {
  # Only tracked metadata changes: status updates never add files.
  git add --update -- "$base" || exit 1
  if git diff --cached --quiet; then
    return 1
  fi
  git commit --quiet --message "$message" || exit 1
}

if ! commit; then
  echo "No status changes to commit."
  exit 0
fi

for attempt in 1 2 3 4 5 6; do
  if git push --quiet origin "HEAD:refs/heads/${branch}"; then
    echo "Pushed status changes to ${branch} (attempt ${attempt})."
    exit 0
  fi
  echo "::notice::push to ${branch} rejected (attempt ${attempt}); rebasing and retrying"
  sleep $((attempt * delay + RANDOM % (delay + 1)))
  git fetch --quiet origin "${branch}"
  if git rebase --quiet "origin/${branch}"; then
    continue
  fi
  git rebase --abort
  if [ ${#reapply[@]} -eq 0 ]; then
    echo "::error::status changes conflict with origin/${branch}; not pushed"
    exit 1
  fi
  # The step is idempotent: apply it again on the new tip.
  echo "::notice::status changes conflict with origin/${branch}; applying them again there"
  git reset --quiet --hard "origin/${branch}"
  "${reapply[@]}"
  if ! commit; then
    echo "Already applied on ${branch}; nothing to push."
    exit 0
  fi
done

echo "::error::could not push status changes to ${branch} after ${attempt} attempts"
exit 1
