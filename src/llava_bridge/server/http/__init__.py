"""HTTP plumbing of the server: the API key, the body-size cap, server-sent events."""
