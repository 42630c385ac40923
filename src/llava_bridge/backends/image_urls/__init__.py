"""Fetching image URLs safely: the SSRF guard and the capped, time-boxed fetcher.

Used by `llava-bridge serve` for jobs' image URLs, and by the backends that take
`fetch_urls=True` (TransformersBackend, OpenAICompatBackend)."""
