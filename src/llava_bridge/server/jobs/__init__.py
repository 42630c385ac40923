"""The durable job queue and uploaded files."""
