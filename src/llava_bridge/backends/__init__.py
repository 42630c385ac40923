"""Backends: fal, a local transformers model, OpenAI-compatible servers, and a fake."""
