"""The server's SSRF guard (moved to `llava_bridge.backends.image_urls.guard` so that
backends can use it without the server)."""

from llava_bridge.backends.image_urls.guard import AddressGuard, Resolver, is_public_address, system_resolver

__all__ = ["AddressGuard", "Resolver", "is_public_address", "system_resolver"]
