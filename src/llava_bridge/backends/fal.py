"""`FalBackend`: LLaVA on fal's queue, run and stream APIs.

Hosts. fal has four: queue (submit/status/result/cancel), run (sync run and
`/stream`), rest (storage tokens, upload initiation) and cdn (uploads). Each is a
constructor argument. `base_url=` (or the env var `LLAVA_FAL_BASE_URL`) points all
four at one server, such as `llava-bridge serve`, with this layout:

=========  ===========================  =========================================
host       URL                          routes under it
=========  ===========================  =========================================
queue      ``{base}``                   ``POST /{endpoint}``, ``GET /{owner}/{alias}/requests/{id}[/status[/stream]]``, ``PUT .../cancel``
run        ``{base}{LOCAL_RUN_PREFIX}``  ``POST /{endpoint}``, ``POST /{endpoint}/stream``
rest       ``{base}{LOCAL_REST_PREFIX}`` ``POST /storage/auth/token``, ``POST /storage/upload/initiate``
cdn        ``{base}{LOCAL_CDN_PREFIX}``  ``POST /files/upload``
=========  ===========================  =========================================
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_CDN_URL",
    "DEFAULT_QUEUE_URL",
    "DEFAULT_REST_URL",
    "DEFAULT_RUN_URL",
    "LOCAL_CDN_PREFIX",
    "LOCAL_REST_PREFIX",
    "LOCAL_RUN_PREFIX",
]

DEFAULT_QUEUE_URL = "https://queue.fal.run"
DEFAULT_RUN_URL = "https://fal.run"
DEFAULT_REST_URL = "https://rest.fal.ai"
DEFAULT_CDN_URL = "https://v3.fal.media"

LOCAL_RUN_PREFIX = "/run"
"""Under `base_url`, the sync run and `/stream` routes live here."""
LOCAL_REST_PREFIX = "/rest"
"""Under `base_url`, the storage token and upload-initiate routes live here."""
LOCAL_CDN_PREFIX = "/cdn"
"""Under `base_url`, the CDN upload route lives here."""
