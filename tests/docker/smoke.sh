#!/usr/bin/env bash
# Docker smoke test, run by CI: build the image, `docker-compose up`, wait until healthy, classify
# real MNIST digits over HTTP, check /metrics, kill the server process and watch the restart policy
# bring it back healthy, then `docker-compose down -v`. Cleans up whatever happens.
#
#   tests/docker/smoke.sh            (needs ../shared/tools/docker-env.sh, and .venv from `make venv`)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
PY=${PY:-$ROOT/.venv/bin/python}
export COMPOSE_PROJECT_NAME=vitdigits-smoke
export TORCH_INDEX_URL=${TORCH_INDEX_URL-}   # empty: pip's default index + the local wheel (see Dockerfile)
export VIT_DIGITS_PUBLISH_PORT=${VIT_DIGITS_PUBLISH_PORT:-18000}
BASE=http://127.0.0.1:$VIT_DIGITS_PUBLISH_PORT
log() { echo "smoke: $*" >&2; }

bash "$ROOT/../shared/tools/docker-env.sh"
COMPOSE=(docker-compose)
command -v docker-compose >/dev/null || COMPOSE=(docker compose)

cleanup() {
  status=$?
  if ((status != 0)); then
    log "FAILED; container logs follow"
    "${COMPOSE[@]}" logs --tail 80 api >&2 || true
  fi
  "${COMPOSE[@]}" down -v --remove-orphans >/dev/null 2>&1 || true
  exit $status
}
trap cleanup EXIT

log "building the image"
start=$(date +%s)
"${COMPOSE[@]}" build api
log "built in $(( $(date +%s) - start )) s; image size $(docker image inspect vit-digits:latest --format '{{.Size}}' | awk '{printf "%.0f MB", $1/1e6}')"
"${COMPOSE[@]}" up -d api
container=$("${COMPOSE[@]}" ps -q api)

wait_healthy() {
  for _ in $(seq 180); do
    state=$(docker inspect --format '{{.State.Health.Status}}' "$container" 2>/dev/null || echo starting)
    [[ $state == healthy ]] && return 0
    sleep 1
  done
  log "container not healthy after 180 s (state: $state)"
  return 1
}
wait_healthy
log "healthy; user $(docker exec "$container" id -un), read-only root: $(docker inspect --format '{{.HostConfig.ReadonlyRootfs}}' "$container")"

"$PY" tests/docker/check_digits.py "$BASE" 50
# each worker process keeps its own counters: ask on fresh connections until one shows them
counted=no
for _ in $(seq 20); do
  if curl -fsS "$BASE/metrics" | grep -q 'vit_digits_requests_total{method="POST",route="/v1/predict",status="200"}'; then
    counted=yes; break
  fi
done
[[ $counted == yes ]] || { log "/metrics does not count the predictions"; exit 1; }
log "metrics count the requests"

restarts=$(docker inspect --format '{{.RestartCount}}' "$container")
pid=$(docker inspect --format '{{.State.Pid}}' "$container")
log "killing the server process (host pid $pid) with SIGKILL"
kill -9 "$pid"
for _ in $(seq 60); do
  [[ $(docker inspect --format '{{.RestartCount}}' "$container") -gt $restarts ]] && break
  sleep 1
done
[[ $(docker inspect --format '{{.RestartCount}}' "$container") -gt $restarts ]] || { log "no restart"; exit 1; }
sleep 2
wait_healthy
"$PY" tests/docker/check_digits.py "$BASE" 10
log "restarted by the restart policy and healthy again: PASSED"
