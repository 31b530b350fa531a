#!/bin/sh
# Register the Splunk sink with Kafka Connect (the `connector-init` one-shot service).
# Idempotent: a connector that already exists is left as it is (HTTP 409); to change
# its config, PUT the "config" object to $CONNECT_URL/connectors/<name>/config.
set -eu
CONNECT_URL="${CONNECT_URL:-http://kafka-connect:8083}"
CONFIG="${CONNECTOR_CONFIG:-/etc/splunk-connect/splunk-sink.json}"
tries=0
until curl -fsS -o /dev/null "$CONNECT_URL/connectors"; do
  tries=$((tries + 1))
  if [ "$tries" -ge 60 ]; then
    echo "connector-init: Kafka Connect at $CONNECT_URL did not answer in 5 minutes" >&2
    exit 1
  fi
  sleep 5
done
code=$(curl -sS -o /tmp/response.json -w '%{http_code}' -X POST \
  -H 'Content-Type: application/json' --data @"$CONFIG" "$CONNECT_URL/connectors")
case "$code" in
  201) echo "connector-init: registered"; cat /tmp/response.json; echo ;;
  409) echo "connector-init: already registered" ;;
  *) echo "connector-init: Kafka Connect answered HTTP $code:" >&2; cat /tmp/response.json >&2; exit 1 ;;
esac
