"""`OpenAICompatBackend`: LLaVA behind any OpenAI-compatible chat server."""
