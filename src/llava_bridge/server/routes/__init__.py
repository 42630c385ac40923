"""The HTTP routes: fal's queue, run and stream, and storage."""
