"""Image URLs of jobs: SSRF guard, fetching, decoding."""
