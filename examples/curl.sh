#!/usr/bin/env bash
# Runner API calls with curl against a running engine (`make run`, or `livestream serve ...`).
set -euo pipefail
URL=${URL:-http://localhost:8000}
AUTH=${AUTH_TOKEN:+-H "Authorization: Bearer $AUTH_TOKEN"}

curl -fsS "$URL/health"; echo
curl -fsS "$URL/hardware/info"; echo

# text-to-image (JSON body); images come back as PNG data URLs.
curl -sS $AUTH -H 'Content-Type: application/json' "$URL/text-to-image" \
  -d '{"prompt": "a lighthouse at dusk", "width": 512, "height": 512, "num_inference_steps": 2, "seed": 42}' \
  | head -c 300; echo

# image-to-image (multipart body)
# curl -sS $AUTH "$URL/image-to-image" -F prompt="watercolor" -F image=@input.png

# live video: start a session on trickle channels of an orchestrator (or `livestream trickle-server`)
# curl -sS $AUTH -H 'Content-Type: application/json' "$URL/live-video-to-video" -d '{
#   "subscribe_url": "http://127.0.0.1:8935/demo", "publish_url": "http://127.0.0.1:8935/demo-out",
#   "control_url": "http://127.0.0.1:8935/demo-control", "events_url": "http://127.0.0.1:8935/demo-events",
#   "model_id": "noop", "stream_id": "demo"}'
