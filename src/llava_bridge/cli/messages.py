"""Library advice said in CLI terms: flags and arguments instead of Python parameters."""

from __future__ import annotations

import re

__all__ = ["cli_message"]

_REWRITES: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(
            r"pass a pathlib\.Path or ImageInput\.from_path\(\.\.\.\)(?: \(tools: allow_local_paths=True\))?"
        ),
        "give the file's path as the image argument",
    ),
    (re.compile(r"ImageInput\.from_path\(\.\.\.\)|a pathlib\.Path"), "a file path"),
    (re.compile(r"pass api_key= to the backend"), "pass --api-key"),
    (
        re.compile(r"\b(api_key|base_url|model|max_new_tokens|temperature|quantization|device|dtype)="),
        "--\\1",
    ),
)


def cli_message(message: str) -> str:
    """`message` with its Python advice (api_key=, pathlib.Path...) turned into CLI advice."""
    for pattern, replacement in _REWRITES:
        message = pattern.sub(replacement, message)
    return re.sub(r"--(\w+)", lambda match: "--" + match.group(1).replace("_", "-"), message)
