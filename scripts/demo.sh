#!/usr/bin/env bash
# The local demo: the whole pipeline against the 1Password simulator.
#
# Starts a throw-away nats-server (JetStream, temp dir) with oprelay's authorization (one user
# per service, an operator, a read-only subscriber; `oprelay nats authorization`), opsim with a
# backfill and a live stream, provisions the bus as the operator (`oprelay nats provision`),
# imports the simulated account's item, vault and user names as lookups, then the fetcher,
# normalizer, forwarder and healthwatch, each as its own NATS user. Records land, enriched, in an NDJSON file sink; this
# script shows them arriving until Ctrl-C, then stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=target/release
work=$(mktemp -d)
pids=()
cleanup() {
  trap - EXIT INT TERM
  echo
  echo "demo: stopping"
  # Newest first: the services finish their in-flight work while NATS is still there.
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill "${pids[i]}" 2>/dev/null || true
    wait "${pids[i]}" 2>/dev/null || true
  done
  [ -n "${DEMO_KEEP:-}" ] && echo "demo: kept $work" || rm -rf "$work"
}
trap cleanup EXIT INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
nats_port=$(free_port)
sim_port=$(free_port)
recv_port=$(free_port)

"$bin/opsim" serve --listen "127.0.0.1:$sim_port" --backfill 2000 --backfill-span 2h \
  --rate 2 --token-file "$work/token" >/dev/null 2>"$work/opsim.log" &
pids+=($!)
mkdir -p "$work/siem"
"$bin/siem-receiver" --listen "127.0.0.1:$recv_port" --out "$work/siem/http-receiver.ndjson" \
  2>"$work/siem-receiver.log" &
pids+=($!)
for _ in $(seq 100); do [ -s "$work/token" ] && break; sleep 0.1; done
[ -s "$work/token" ] || { echo "demo: opsim did not start; see $work/opsim.log" >&2; exit 1; }

cat >"$work/oprelay.toml" <<TOML
[nats]
url = "nats://127.0.0.1:$nats_port"

[telemetry]
log_format = "pretty"
log_level = "warn"

[[accounts]]
name = "demo"
label = "Demo 1Password (simulated)"
base_url = "http://127.0.0.1:$sim_port"
token_file = "$work/token"
start_time = "2000-01-01T00:00:00Z"
poll_interval = "5s"

[[sinks]]
name = "archive"
type = "file"
path = "$work/siem/events.ndjson"
batch = { max_events = 500, timeout = "500ms" }

# A local HTTP receiver standing in for Panther's HTTP source (NDJSON over POST).
[[sinks]]
name = "panther-http"
type = "http"
endpoint = "http://127.0.0.1:$recv_port/ingest"
batch = { max_events = 500, timeout = "500ms" }
TOML
export OPRELAY_CONFIG="$work/oprelay.toml"

# The bus as production runs it: every user's password in a file (a Kubernetes Secret there),
# handed to nats-server through the environment variables the rendered authorization names.
mkdir -p "$work/nats-users"
for role in fetcher normalizer forwarder healthwatch operator subscriber; do
  head -c 24 /dev/urandom | base64 | tr -d '/+=' >"$work/nats-users/$role"
  export "OPRELAY_NATS_PASSWORD_${role^^}=$(cat "$work/nats-users/$role")"
done
"$bin/oprelay" nats authorization >"$work/nats-auth.conf"
cat >"$work/nats.conf" <<CONF
listen: 127.0.0.1:$nats_port
jetstream { store_dir: "$work/jetstream" }
include ./nats-auth.conf
CONF
newest=$(grep -v '^#' "$(dirname "$0")/nats-versions" | head -1)
nats_bin=${NATS_SERVER_BIN:-target/nats/$newest/bin/nats-server}
"$nats_bin" -c "$work/nats.conf" >"$work/nats.log" 2>&1 &
pids+=($!)
for role in fetcher normalizer forwarder healthwatch operator subscriber; do
  unset "OPRELAY_NATS_PASSWORD_${role^^}"
done
# `env $(as_user ROLE) COMMAND`: COMMAND connects to NATS as oprelay-ROLE (env execs it, so
# a background job's $! is the command itself).
as_user() { echo "OPRELAY_NATS__USER=oprelay-$1 OPRELAY_NATS__PASSWORD_FILE=$work/nats-users/$1"; }
for _ in $(seq 100); do (echo >"/dev/tcp/127.0.0.1/$nats_port") 2>/dev/null && break; sleep 0.1; done

echo "demo: provisioning the streams, buckets and consumers (oprelay nats provision)"
env $(as_user operator) "$bin/oprelay" nats provision | sed 's/^/  /'

echo "demo: importing the simulated account's names (op item/vault/user list format)"
for kind in items vaults users; do "$bin/opsim" directory --kind "$kind" >"$work/$kind.json"; done
env $(as_user operator) "$bin/oprelay" lookups import "$work/items.json" "$work/vaults.json" "$work/users.json" | sed 's/^/  /'

# Each service on its own admin port, as on one host.
env $(as_user fetcher) OPRELAY_TELEMETRY__LISTEN="127.0.0.1:$(free_port)" "$bin/oprelay-fetcher" 2>"$work/fetcher.log" &
pids+=($!)
env $(as_user normalizer) OPRELAY_TELEMETRY__LISTEN="127.0.0.1:$(free_port)" "$bin/oprelay-normalizer" 2>"$work/normalizer.log" &
pids+=($!)
env $(as_user forwarder) OPRELAY_TELEMETRY__LISTEN="127.0.0.1:$(free_port)" "$bin/oprelay-forwarder" 2>"$work/forwarder.log" &
pids+=($!)
env $(as_user healthwatch) OPRELAY_TELEMETRY__LISTEN="127.0.0.1:$(free_port)" "$bin/oprelay-healthwatch" 2>"$work/healthwatch.log" &
pids+=($!)

out="$work/siem/events.ndjson"
echo "demo: 1Password (opsim) → fetcher → NATS → normalizer → forwarder → $out"
echo "demo:                                                      and → http://127.0.0.1:$recv_port/ingest ($work/siem/http-receiver.ndjson)"
echo "demo: 3 × 2 000 backfilled events, then 2 live events per second per feed. Ctrl-C stops."
for _ in $(seq 300); do [ -s "$out" ] && break; sleep 0.2; done
echo "demo: the first records, as a SIEM receives them:"
head -n 3 "$out" | python3 -c '
import json, sys
for line in sys.stdin:
    r = json.loads(line)
    print(json.dumps(r, indent=2, ensure_ascii=False)[:1500])
'
for _ in $(seq 100); do [ -s "$work/siem/http-receiver.ndjson" ] && break; sleep 0.2; done
echo "demo: the HTTP receiver has $(wc -l <"$work/siem/http-receiver.ndjson") records so far"
sleep 3
# Live progress until Ctrl-C: per feed, what was fetched and delivered, sink backlog, alarms.
env $(as_user operator) "$bin/oprelay" status --watch
