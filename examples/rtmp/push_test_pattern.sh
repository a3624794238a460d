#!/bin/sh
# Publish a 720p30 test pattern with a tone to the engine, like OBS would (30 s).
# Usage: examples/rtmp/push_test_pattern.sh [rtmp://localhost:1935/live/test]
set -eu
URL="${1:-rtmp://localhost:1935/live/test}"
exec ffmpeg -hide_banner -re \
  -f lavfi -i testsrc2=size=1280x720:rate=30 -f lavfi -i sine=frequency=440:sample_rate=48000 -t 30 \
  -c:v libx264 -preset veryfast -tune zerolatency -g 60 -bf 0 -pix_fmt yuv420p -b:v 2500k \
  -c:a aac -b:a 160k -ac 2 -f flv "$URL"
