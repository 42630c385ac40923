"""The server fetches jobs' image URLs with the backends' guarded fetcher (moved to
`llava_bridge.backends.image_urls.fetcher` so that backends can use it without the server)."""

from llava_bridge.backends.image_urls.fetcher import ImageFetcher, parse_image_url

__all__ = ["ImageFetcher", "parse_image_url"]
