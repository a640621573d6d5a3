#!/bin/sh
# Smoke check after `azd deploy` (postdeploy hook): GET the app's /api/health until it answers
# 200, waiting while a freshly deployed Flex Consumption app starts, for a bounded time. Fails
# (exit 1) with the last answer as the reason: the health report names the setting or storage
# service that is not ready, or curl says why nothing answered.
#   sh infra/hooks/smoke-check.sh https://<app host>/api/health
# SMOKE_CHECK_TIMEOUT_SECONDS (default 300) bounds the wait; SMOKE_CHECK_INTERVAL_SECONDS
# (default 10) spaces the attempts.
set -u

url=${1:?usage: smoke-check.sh <health url>}
timeout=${SMOKE_CHECK_TIMEOUT_SECONDS:-300}
interval=${SMOKE_CHECK_INTERVAL_SECONDS:-10}
body=$(mktemp)
errors=$(mktemp)
trap 'rm -f "$body" "$errors"' EXIT

deadline=$(( $(date +%s) + timeout ))
attempt=0
while :; do
    attempt=$((attempt + 1))
    status=$(curl -sS --max-time 15 -o "$body" -w '%{http_code}' "$url" 2>"$errors")
    if [ "$status" = "200" ]; then
        echo "smoke check: $url answered 200 (attempt $attempt): $(head -c 500 "$body")"
        exit 0
    fi
    if [ "$status" = "000" ] || [ -z "$status" ]; then
        reason="no answer: $(head -c 300 "$errors")"
    else
        reason="HTTP $status: $(head -c 1000 "$body")"
    fi
    now=$(date +%s)
    if [ "$now" -ge "$deadline" ]; then
        echo "smoke check FAILED: $url is not healthy after ${timeout}s ($attempt attempts)." >&2
        echo "last answer, $reason" >&2
        echo "The health report names what is not ready (docs/operations.md); the app's logs are in Application Insights." >&2
        exit 1
    fi
    echo "smoke check: not healthy yet ($reason); next try in ${interval}s"
    sleep "$interval"
done
