#!/usr/bin/env bash
# Replicas test, run by CI: three API replicas behind HAProxy (deploy/compose.replicas.yml) under a
# steady load of real MNIST digits (tests/docker/load.py), while
#   1. one replica is SIGKILLed (with requests in flight) and comes back by the restart policy,
#   2. one replica is SIGSTOPped for 5 s, then continued,
#   3. every replica is restarted, one after another (SIGTERM, wait until back in the balancer),
#      with a client trickling its upload through the first SIGTERM: each replica must exit by
#      itself within the grace period, and that upload must be answered,
#   4. 40,000 slow connections (4 containers x 10,000, a header byte every 3 s) hit the balancer,
#      while the normal requests open a new connection each.
# Fails unless every request of every scenario got a 200. Prints the counts and HAProxy's retries.
#
#   tests/docker/replicas.sh      (needs ../shared/tools/docker-env.sh, and .venv from `make venv`)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
PY=${PY:-$ROOT/.venv/bin/python}
export COMPOSE_PROJECT_NAME=vitd-replicas
export VIT_DIGITS_IMAGE=${VIT_DIGITS_IMAGE:-vit-digits:replicas-test}
export VIT_DIGITS_LB_IMAGE=${VIT_DIGITS_LB_IMAGE:-vit-digits-lb:replicas-test}
export TORCH_INDEX_URL=${TORCH_INDEX_URL-}   # empty: pip's default index + the local wheel (see Dockerfile)
export VIT_DIGITS_PUBLISH_PORT=${VIT_DIGITS_PUBLISH_PORT:-18100}
REPLICAS=3
CONCURRENCY=${CONCURRENCY:-12}
FLOOD_CONTAINERS=4 FLOOD_EACH=10000   # 40,000; each process stays under this host's 20,000 open files
GRACE=20                              # stop_grace_period in deploy/compose.replicas.yml
BASE=http://127.0.0.1:$VIT_DIGITS_PUBLISH_PORT
WORK=$(mktemp -d)
log() { echo "replicas: $*" >&2; }
since() { awk -v t0="$1" -v t1="$(date +%s.%N)" 'BEGIN {printf "%.1f", t1 - t0}'; }

bash "$ROOT/../shared/tools/docker-env.sh"
COMPOSE=(docker-compose)
command -v docker-compose >/dev/null || COMPOSE=(docker compose)
COMPOSE+=(-f docker-compose.yml -f deploy/compose.replicas.yml)
ulimit -n "$(ulimit -Hn)"   # the load generator's connections, and those the proxy of the published port opens

LOAD_PID=
cleanup() {
  status=$?
  [[ -n $LOAD_PID ]] && kill "$LOAD_PID" 2>/dev/null
  for i in $(seq "$FLOOD_CONTAINERS"); do docker rm -f "$COMPOSE_PROJECT_NAME-flood-$i" >/dev/null 2>&1 || true; done
  wait 2>/dev/null
  if ((status != 0)); then
    log "FAILED; logs follow"
    "${COMPOSE[@]}" logs --tail 40 >&2 || true
  fi
  "${COMPOSE[@]}" down -v --remove-orphans >/dev/null 2>&1 || true
  rm -rf "$WORK"
  exit $status
}
trap cleanup EXIT

# HAProxy's statistics as CSV rows "name status requests-answered-2xx retries redispatches", one
# per replica slot in use, then the backend row, then "FRONTEND current max refused accepted" (connections).
lb_stats() {
  docker exec "$LB" python3 -c '
import csv, io, urllib.request
rows = csv.DictReader(io.StringIO(urllib.request.urlopen("http://127.0.0.1:8404/stats;csv").read().decode().lstrip("# ")))
for r in rows:
    if r["pxname"] == "replicas" and not r["status"].startswith("MAINT"):
        print(r["svname"], r["status"], r["hrsp_2xx"] or 0, r["wretr"] or 0, r["wredis"] or 0)
    elif r["pxname"] == "api" and r["svname"] == "FRONTEND":
        print("FRONTEND", r["scur"], r["smax"], r["dcon"] or 0, r["stot"])
'
}
taken_out() {  # $1: since when; "apiN: K in flight" for each replica HAProxy took out since then
  docker logs --since "$1" "$LB" 2>&1 \
    | sed -nE 's/.*Server replicas\/(api[0-9]+) is (going )?DOWN.* ([0-9]+) sessions active.*/\1: \3 in flight/p' \
    | uniq | paste -sd ',' -
}
servers_up() { lb_stats | awk '$1 ~ /^api[0-9]/ && $2 == "UP"' | wc -l; }
retries() { lb_stats | awk '$1 == "BACKEND" {print $4, $5}'; }

server_shutdown_s() {  # $1: container, $2: since when; uvicorn's "Shutting down" to "Finished server process"
  docker logs --since "$2" "$1" 2>&1 | "$PY" -c '
import datetime, json, sys
at = {}
for line in sys.stdin:
    try:
        record = json.loads(line)
    except ValueError:
        continue
    for key, text in (("start", "Shutting down"), ("end", "Finished server process")):
        if record.get("message", "").startswith(text):
            at[key] = datetime.datetime.fromisoformat(record["time"].replace("Z", "+00:00"))
print("%.2f" % (at["end"] - at["start"]).total_seconds() if len(at) == 2 else "?")'
}

wait_all_up() {  # every replica healthy for Docker and UP in the balancer
  for _ in $(seq 180); do
    healthy=0
    for c in $("${COMPOSE[@]}" ps -q api); do
      [[ $(docker inspect --format '{{if .State.Health}}{{.State.Health.Status}}{{end}}' "$c") == healthy ]] && ((healthy += 1))
    done
    if ((healthy == REPLICAS)) && (($(servers_up) == REPLICAS)); then return 0; fi
    sleep 1
  done
  log "replicas not all up after 180 s"; lb_stats >&2; return 1
}

FAILED=0
SUMMARY=()
start_load() {  # $1: a name for the report; more arguments go to load.py
  RETRIES_BEFORE=$(retries)
  rm -f "$WORK/flowing"
  "$PY" tests/docker/load.py "$BASE" --concurrency "$CONCURRENCY" --report "$WORK/$1.json" \
    --ready-file "$WORK/flowing" "${@:2}" >/dev/null &
  LOAD_PID=$!
  for _ in $(seq 120); do [[ -e $WORK/flowing ]] && break; sleep 0.5; done
  [[ -e $WORK/flowing ]] || { log "the load did not start"; exit 1; }
  sleep 2  # steady
}
stop_load() {  # $1: the name given to start_load, $2: what the scenario did
  kill -TERM "$LOAD_PID"
  wait "$LOAD_PID" || true
  LOAD_PID=
  read -r r0 d0 <<<"$RETRIES_BEFORE"
  read -r r1 d1 <<<"$(retries)"
  line=$("$PY" -c 'import json, sys
print("{requests} requests, {failed} failed {failures}, p50 {p50_ms} ms, p99 {p99_ms} ms, max {max_ms} ms".format(**json.load(open(sys.argv[1]))))' "$WORK/$1.json")
  line="$line; HAProxy retried $((r1 - r0)), redispatched $((d1 - d0))"
  log "$2: $line"
  SUMMARY+=("$2: $line")
  (($("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["failed"])' "$WORK/$1.json") == 0)) || FAILED=1
}

log "building the images (api: $VIT_DIGITS_IMAGE, balancer: $VIT_DIGITS_LB_IMAGE)"
start=$(date +%s)
"${COMPOSE[@]}" build api lb
log "built in $(($(date +%s) - start)) s"
"${COMPOSE[@]}" up -d --scale api=$REPLICAS
LB=$("${COMPOSE[@]}" ps -q lb)
NETWORK=$(docker inspect --format '{{range $k, $v := .NetworkSettings.Networks}}{{$k}}{{end}}' "$LB")
wait_all_up
log "$REPLICAS replicas up behind HAProxy $(docker exec "$LB" haproxy -v | head -1 | awk '{print $3}') in $(($(date +%s) - start)) s"
"$PY" tests/docker/check_digits.py "$BASE" 20

# Balanced per request: 30 requests on ONE keep-alive connection reach every replica.
lb_stats | awk '$1 ~ /^api[0-9]/ {print $1, $3}' | sort >"$WORK/before"
"$PY" - "$BASE" <<'EOF'
import sys, httpx
sys.path.insert(0, "tests/docker")
from load import digit_pngs
with httpx.Client(base_url=sys.argv[1]) as client:
    for png, _ in digit_pngs(30):
        client.post("/v1/predict", content=png, headers={"content-type": "image/png"}).raise_for_status()
EOF
lb_stats | awk '$1 ~ /^api[0-9]/ {print $1, $3}' | sort >"$WORK/after"
shares=$(join "$WORK/before" "$WORK/after" | awk '{print $3 - $2}' | sort -n | tr '\n' ' ')
log "30 requests on one connection, per replica: $shares"
[[ $(echo "$shares" | awk '{print $1}') -ge 5 ]] || { log "not balanced per request"; exit 1; }

mapfile -t APIS < <("${COMPOSE[@]}" ps -q api)

# 1. SIGKILL, at a moment when HAProxy has requests in flight on that replica (they must go to
# another one). The signal goes to the replica's process from here, as a crash would: Docker's
# restart policy brings it back (it does not after `docker kill`, which Docker counts as a stop).
start_load kill
since_utc=$(date -u +%Y-%m-%dT%H:%M:%S.%NZ)
restarts=$(docker inspect --format '{{.RestartCount}}' "${APIS[0]}")
ip_of() { docker inspect --format '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$1"; }
"$PY" - "http://$(ip_of "$LB"):8404/stats;csv" "$(ip_of "${APIS[0]}"):8000" \
  "$(docker inspect --format '{{.State.Pid}}' "${APIS[0]}")" <<'EOF'
import csv, io, os, signal, sys, time, urllib.request
stats, address, pid = sys.argv[1], sys.argv[2], int(sys.argv[3])
deadline = time.monotonic() + 5
while True:
    rows = csv.DictReader(io.StringIO(urllib.request.urlopen(stats).read().decode().lstrip("# ")))
    in_flight = sum(int(r["scur"] or 0) for r in rows if r["addr"] == address)
    if in_flight or time.monotonic() > deadline:
        break
os.kill(pid, signal.SIGKILL)
print(f"replicas: SIGKILL with {in_flight} request(s) in flight on it (HAProxy's count just before)", file=sys.stderr)
EOF
for _ in $(seq 30); do
  [[ $(docker inspect --format '{{.RestartCount}}' "${APIS[0]}") -gt $restarts ]] && break
  sleep 1
done
[[ $(docker inspect --format '{{.RestartCount}}' "${APIS[0]}") -gt $restarts ]] || { log "not restarted"; exit 1; }
wait_all_up
sleep 2
stop_load kill "SIGKILL one replica"
log "taken out of the balancer (requests it had in flight then): $(taken_out "$since_utc")"

# 2. SIGSTOP for 5 s
start_load stop
since_utc=$(date -u +%Y-%m-%dT%H:%M:%S.%NZ)
docker kill -s STOP "${APIS[1]}" >/dev/null
sleep 4
down_seen=$(lb_stats | awk '$1 ~ /^api[0-9]/ && $2 !~ /^UP/' | wc -l)
sleep 1
docker kill -s CONT "${APIS[1]}" >/dev/null
wait_all_up
sleep 2
stop_load stop "SIGSTOP one replica 5 s"
log "replicas out of the balancer 4 s into the stop: $down_seen (expected 1); $(taken_out "$since_utc")"
((down_seen == 1)) || FAILED=1

# 3. Rolling restart: SIGTERM, wait until back in the balancer, next. A client trickles its upload
# (a digit over 6 s) through the first SIGTERM: HAProxy holds it, so the replica need not wait.
"$PY" -c 'import sys; sys.path.insert(0, "tests/docker"); from load import digit_pngs
open(sys.argv[1], "wb").write(digit_pngs(1)[0][0])' "$WORK/digit.png"
start_load rolling
"$PY" tests/docker/slow_clients.py upload 127.0.0.1 "$VIT_DIGITS_PUBLISH_PORT" "$WORK/digit.png" --seconds 6 >"$WORK/upload.json" &
upload_pid=$!
sleep 2
for c in "${APIS[@]}"; do
  since_utc=$(date -u +%Y-%m-%dT%H:%M:%S.%NZ)
  t0=$(date +%s.%N)
  docker stop -t $GRACE "$c" >/dev/null
  exit_s=$(since "$t0")
  exit_code=$(docker inspect --format '{{.State.ExitCode}}' "$c")
  drain_s=$(server_shutdown_s "$c" "$since_utc")
  log "replica ${c:0:12}: SIGTERM to exit ${exit_s} s (the server's own shutdown: ${drain_s} s), exit code $exit_code"
  [[ $exit_code == 0 ]] && awk -v s="$exit_s" -v g="$GRACE" 'BEGIN {exit !(s < g)}' || FAILED=1
  if [[ -n $upload_pid ]]; then
    wait "$upload_pid"
    upload_pid=
    log "the upload trickled through that SIGTERM: $(cut -c1-70 "$WORK/upload.json")"
    grep -q '"status": "200"' "$WORK/upload.json" || FAILED=1
  fi
  docker start "$c" >/dev/null
  wait_all_up
done
sleep 2
stop_load rolling "rolling restart of $REPLICAS replicas (SIGTERM each)"

# 4. Slow connections flood; the normal requests open a new connection each, as new clients do.
read -r refused0 accepted0 <<<"$(lb_stats | awk '$1 == "FRONTEND" {print $4, $5}')"
start_load flood --new-connections
flood_pids=()
for i in $(seq "$FLOOD_CONTAINERS"); do  # the script goes in on stdin: nothing to mount
  docker run --rm -i --name "$COMPOSE_PROJECT_NAME-flood-$i" --network "$NETWORK" "$VIT_DIGITS_LB_IMAGE" \
    python3 - flood lb 8000 --connections "$FLOOD_EACH" --ramp 15 --hold 30 --interval 3 \
    <tests/docker/slow_clients.py >"$WORK/flood-$i.json" &
  flood_pids+=($!)
done
wait "${flood_pids[@]}"
for i in $(seq "$FLOOD_CONTAINERS"); do log "flood client $i: $(cat "$WORK/flood-$i.json")"; done
read -r smax refused accepted <<<"$(lb_stats | awk '$1 == "FRONTEND" {print $3, $4, $5}')"
stop_load flood "flood of $((FLOOD_CONTAINERS * FLOOD_EACH)) slow connections"
reached=$((refused - refused0 + accepted - accepted0))
log "HAProxy during the flood: $reached connections reached it, at most $smax open at once," \
  "$((refused - refused0)) refused at once (over 500 per client address)"
# the flood must have happened for its 0 failed requests to mean anything
((reached >= FLOOD_CONTAINERS * FLOOD_EACH * 9 / 10)) || { log "the flood did not reach HAProxy"; FAILED=1; }

log "summary (concurrency $CONCURRENCY, $REPLICAS replicas):"
for line in "${SUMMARY[@]}"; do log "  $line"; done
((FAILED == 0)) || { log "FAILED: see above"; exit 1; }
log "PASSED in $(($(date +%s) - start)) s"
