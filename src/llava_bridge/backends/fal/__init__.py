"""`FalBackend` and fal's protocol: endpoints, queue, uploads, the flows that drive them."""
