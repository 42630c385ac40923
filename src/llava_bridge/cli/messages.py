"""Library advice said in CLI terms: flags and environment variables instead of Python parameters.

The library's messages speak to Python callers (`api_key=`, `pathlib.Path`, `base_url= in
code`); the CLI shows them through `cli_message`, which rewrites each piece of advice into
what a command-line user can do. Specific sentences come first, then the generic
``name=`` -> ``--name`` rule for parameters that are also flags.
"""

from __future__ import annotations

import re
from collections.abc import Callable

__all__ = ["cli_message"]

Replacement = str | Callable[[re.Match[str]], str]


def _try_again(match: re.Match[str]) -> str:
    """Timeout advice the CLI cannot follow, as what it can do (the first letter's case kept)."""
    separator, first = match[1], "T" if match[2] == "R" else "t"
    return f"{separator} {first}ry again, or ask for fewer tokens with --max-new-tokens."


_REWRITES: tuple[tuple[re.Pattern[str], Replacement], ...] = (
    # Images: a path is simply the image argument.
    (
        re.compile(
            r"pass a pathlib\.Path or ImageInput\.from_path\(\.\.\.\)(?: \(tools: allow_local_paths=True\))?"
        ),
        "give the file's path as the image argument",
    ),
    (re.compile(r"ImageInput\.from_path\(\.\.\.\)|a pathlib\.Path"), "a file path"),
    # The key rule (backends/fal/credentials.py): a host named by --base-url is not "in code".
    (re.compile(r"pass api_key= to the backend"), "pass --api-key"),
    (re.compile(r"\(from (\w+)= in code\)"), r"(from --\1)"),
    (re.compile(r"the api_key= given in code"), "the key given with --api-key"),
    (
        re.compile(r"pass api_key=\.\.\., or set (\w+) instead of (\w+)=\."),
        r"set \1 instead of --\2, or pass --api-key KEY.",
    ),
    (re.compile(r"pass api_key=, or"), "pass --api-key KEY, or"),
    # Timeouts and limits the CLI has no flag for: say what it can do instead.
    (re.compile(r"([.;?]) ([Rr])aise timeout=[^.]*\."), _try_again),
    (re.compile(r", or raise the timeout\."), ", or ask for fewer tokens with --max-new-tokens."),
    (re.compile(r" \(raise max_response_bytes= if it is expected\)"), ""),
    (re.compile(r"an environment key is sent only to"), "FAL_KEY is sent only to"),
    # URLs and models.
    (re.compile(r"('[^']*') is not a fal endpoint id"), r"--model \1 is not a fal endpoint id"),
    (re.compile(r"check base_url= and the other \*_url settings"), "check --base-url"),
    (re.compile(r"Check base_url/model=\."), "Check --base-url and --model."),
    (re.compile(r"or use generate\(\) \(the queue"), "or leave out --stream (the queue"),
    # Generation settings and `serve`'s local-model flags.
    (re.compile(r"\b(max_new_tokens|temperature) must\b"), r"--\1 must"),
    (re.compile(r"pass quantization=None"), "leave out --quantization"),
    (re.compile(r"\b(device|dtype|quantization)=(['\"]?)([\w:.-]+)\2"), r"--\1 \3"),
    (re.compile(r"\b(api_key|base_url|model|max_new_tokens|temperature)="), r"--\1"),
    # Several images (ask's --multi-image).
    (re.compile(r"\bmulti_image='(\w+)'"), r"--multi-image \1"),
)


def cli_message(message: str) -> str:
    """`message` with its Python advice (api_key=, pathlib.Path...) turned into CLI advice."""
    for pattern, replacement in _REWRITES:
        message = pattern.sub(replacement, message)
    return re.sub(r"--(\w+)", lambda match: "--" + match.group(1).replace("_", "-"), message)
