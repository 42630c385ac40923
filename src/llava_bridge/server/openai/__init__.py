"""OpenAI's chat API in front of the server's backend: wire models, conversion to core turns,
errors, answer bodies and streamed chunks. The routes are in `server/routes/openai_chat.py`."""
