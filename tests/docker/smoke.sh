#!/usr/bin/env bash
# Docker smoke test, run by CI: build the image; check what it adds to its base (at most 200 MB), that it
# holds no torch, and one serving process's cold start and memory inside it; `docker-compose up`, wait until healthy, classify
# real MNIST digits over HTTP, check /metrics, kill the server process and watch the restart policy
# bring it back healthy, then `docker-compose down -v`. Cleans up whatever happens.
#
#   tests/docker/smoke.sh            (needs ../shared/tools/docker-env.sh, and .venv from `make venv`)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
PY=${PY:-$ROOT/.venv/bin/python}
export COMPOSE_PROJECT_NAME=vitdigits-smoke
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
base_size=$(docker image inspect python:3.11-slim --format '{{.Size}}')
size=$(docker image inspect vit-digits:latest --format '{{.Size}}')
added=$(( (size - base_size) / 1000000 ))
log "the image adds $added MB to python:3.11-slim ($(( size / 1000000 )) MB in all; at most 200)"
(( added <= 200 )) || { log "FAILED: the image adds more than 200 MB"; exit 1; }
docker run --rm vit-digits:latest python -c "import importlib.util as u; assert not u.find_spec('torch')" \
  || { log "FAILED: torch is in the runtime image"; exit 1; }

log "cold start and memory of one serving process inside the image (bench/lean_serving.py)"
out=$(mktemp -d)
chmod 777 "$out"
docker run --rm --read-only --tmpfs /tmp -v "$ROOT/bench:/bench:ro" -v "$ROOT/tests:/tests:ro" -v "$out:/out" vit-digits:latest \
  python /bench/lean_serving.py --modes export --runs 3 --requests 100 --app-dir /srv \
  --checkpoints /srv/checkpoints --json /out/lean.json >&2
# The goal is 1 s; this machine measures 0.7 s, 1.3 s when the VM runs at half speed
# (docs/PERFORMANCE.md). The check is a
# guard against a return of torch-sized starts (8 s) with room for a busy CI machine.
"$PY" - "$out/lean.json" "${COLD_START_LIMIT_S:-2.0}" <<'PYEOF'
import json, sys
m = json.load(open(sys.argv[1]))["export"]
limit = float(sys.argv[2])
print(f"smoke: start to /readyz {m['ready_s']:.2f} s (median of 3; at most {limit}), RSS {m['rss_mb']:.0f} MB (at most 150)",
      file=sys.stderr)
assert not m["torch_loaded"], "FAILED: torch was loaded"
assert m["rss_mb"] <= 150, "FAILED: a serving process uses more than 150 MB"
assert m["ready_s"] <= limit, "FAILED: the cold start took too long"
PYEOF
rm -rf "$out"

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
