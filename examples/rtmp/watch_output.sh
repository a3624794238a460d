#!/bin/sh
# Receive a stream's processed output over RTMP and record it (Ctrl-C to stop).
# Usage: examples/rtmp/watch_output.sh STREAM [out.flv]   (the engine on localhost:8000)
set -eu
STREAM="${1:?stream name}"
OUT="${2:-out.flv}"
ffmpeg -hide_banner -loglevel warning -y -listen 1 -i rtmp://127.0.0.1:1936/out/view -c copy -f flv "$OUT" &
LISTENER=$!
sleep 1
curl -s -X POST "http://localhost:8000/live/$STREAM" -H 'Content-Type: application/json' \
  -d '{"rtmp_output": "rtmp://127.0.0.1:1936/out/view"}'
echo
echo "recording $STREAM's output to $OUT; Ctrl-C to stop"
wait $LISTENER
