"""`fetch_urls=` and `allow_private_urls=` of the backends that run the model themselves
or talk to a server that may not fetch: the fetcher they make, and a request with its URL
image replaced by the fetched one."""

from __future__ import annotations

from llava_bridge.backends.image_urls.fetcher import ImageFetcher
from llava_bridge.backends.image_urls.guard import AddressGuard
from llava_bridge.errors import ConfigurationError
from llava_bridge.types import VisionRequest

__all__ = ["BACKEND_PRIVATE_ADVICE", "fetcher_for", "with_fetched_image"]

BACKEND_PRIVATE_ADVICE = "pass allow_private_urls=True to the backend to allow it"


def fetcher_for(fetch_urls: bool | ImageFetcher, allow_private_urls: bool) -> ImageFetcher | None:
    """The fetcher `fetch_urls=` asks for: None (URLs are not fetched), a guarded default
    one (`True`), or the `ImageFetcher` given (its own guard, timeout and caps)."""
    if isinstance(fetch_urls, ImageFetcher):
        if allow_private_urls:
            raise ConfigurationError(
                "allow_private_urls= applies to the fetcher the backend makes; with your own "
                "ImageFetcher, give its AddressGuard allow_private=True instead."
            )
        return fetch_urls
    if not isinstance(fetch_urls, bool) or not isinstance(allow_private_urls, bool):
        raise ConfigurationError(
            "fetch_urls must be True, False or an ImageFetcher, and allow_private_urls True or False; "
            f"not {fetch_urls!r} and {allow_private_urls!r}."
        )
    if not fetch_urls:
        if allow_private_urls:
            raise ConfigurationError("allow_private_urls=True needs fetch_urls=True.")
        return None
    guard = AddressGuard.from_settings(
        allow_private=allow_private_urls, allowed_hosts=(), private_advice=BACKEND_PRIVATE_ADVICE
    )
    return ImageFetcher(guard)


def with_fetched_image(request: VisionRequest, fetcher: ImageFetcher) -> VisionRequest:
    """`request` with its URL image fetched and validated (blocking: call it off the event loop)."""
    image = request.image
    if image is None or not image.is_url or image.url is None:
        return request
    return request.model_copy(update={"image": fetcher.load_sync(image.url)})
