"""Generate an image through Livepeer's own Python SDK (`pip install livepeer-ai`), pointed at livestream.

    livestream models tiny --task text-to-image --out /tmp/tiny-sd      # offline fixture, outputs noise
    livestream serve --pipeline text-to-image --model-id /tmp/tiny-sd
    python examples/sdk_text_to_image.py http://localhost:8000 out.png
"""

from __future__ import annotations

import base64
import sys

from livepeer_ai import Livepeer


def main(server_url: str, out_path: str) -> None:
    client = Livepeer(server_url=server_url, http_bearer="")
    result = client.generate.text_to_image(request={"prompt": "a lighthouse at dusk", "width": 64, "height": 64, "seed": 7})
    image = result.image_response.images[0]
    header, _, payload = image.url.partition(",")
    with open(out_path, "wb") as f:
        f.write(base64.b64decode(payload))
    print(f"wrote {out_path} ({header}), seed {image.seed}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "http://localhost:8000", sys.argv[2] if len(sys.argv) > 2 else "out.png")
