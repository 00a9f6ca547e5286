#!/usr/bin/env bash
# Local demo: starts opsim (a faithful 1Password Events API simulator) with a backfill and a
# live stream, then follows the item-usage feed the way oprelay's fetcher does — drain while
# has_more, keep the cursor, poll again — printing each event as it arrives. Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

port=${OPSIM_PORT:-8787}
target/release/opsim serve --listen "127.0.0.1:$port" --backfill 50 --backfill-span 1h \
  --rate 0.5 --token-file "$work/token" >/dev/null &
pids+=($!)
for _ in $(seq 50); do [ -s "$work/token" ] && break; sleep 0.1; done
[ -s "$work/token" ] || { echo "demo: opsim did not start" >&2; exit 1; }

api="http://127.0.0.1:$port/api/v2/itemusages"
auth="Authorization: Bearer $(cat "$work/token")"
echo "demo: opsim serves the 1Password Events API at http://127.0.0.1:$port"
echo "demo: introspection: $(curl -fsS -H "$auth" "http://127.0.0.1:$port/api/v2/auth/introspect")"
echo "demo: following item usages (Ctrl-C to stop)"
body='{"limit":100,"start_time":"2000-01-01T00:00:00Z"}'
total=0
while true; do
  page=$(curl -fsS -H "$auth" -H 'content-type: application/json' -d "$body" "$api")
  summary=$(printf '%s' "$page" | python3 -c '
import json, sys
p = json.load(sys.stdin)
for e in p["items"]:
    print(f"  {e[\"timestamp\"]}  {e[\"action\"]:<20} {e[\"user\"][\"email\"]:<32} item {e[\"item_uuid\"]}")
print(json.dumps({"cursor": p["cursor"], "has_more": p["has_more"], "n": len(p["items"])}))')
  printf '%s\n' "$summary" | sed '$d'
  meta=$(printf '%s\n' "$summary" | tail -n 1)
  total=$((total + $(printf '%s' "$meta" | python3 -c 'import json,sys; print(json.load(sys.stdin)["n"])')))
  body=$(printf '%s' "$meta" | python3 -c 'import json,sys; print(json.dumps({"cursor": json.load(sys.stdin)["cursor"]}))')
  if [ "$(printf '%s' "$meta" | python3 -c 'import json,sys; print(json.load(sys.stdin)["has_more"])')" = False ]; then
    echo "demo: caught up after $total events; polling again in 5 s"
    sleep 5
  fi
done
