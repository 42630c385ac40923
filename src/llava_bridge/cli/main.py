"""The `llava-bridge` command: ask, describe, serve, demo."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from collections.abc import Sequence
from functools import partial
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from llava_bridge._version import __version__
from llava_bridge.backends.base import Backend
from llava_bridge.backends.factory import BACKEND_NAMES, make_backend
from llava_bridge.backends.fake import FakeBackend
from llava_bridge.cli.messages import cli_message
from llava_bridge.defaults import DEFAULT_ENDPOINT
from llava_bridge.errors import InvalidRequestError, LlavaError
from llava_bridge.images import ImageInput
from llava_bridge.types import DEFAULT_MAX_NEW_TOKENS, VisionRequest, VisionResult

if TYPE_CHECKING:
    from llava_bridge.describe import DescribeSummary

__all__ = ["main"]

DEMO_PROMPT = "What are these?"
OFFLINE_NOTE = (
    "Offline answers come from a tiny random-weight model or a fake backend: they are NOT real model output."
)
API_KEY_HELP = (
    "fal API key (default: the FAL_KEY environment variable, which is safer: "
    "other users of this machine can see command lines)"
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 1 failed, 2 bad input)."""
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.run is not _serve:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
    if args.run is not _serve:  # the server sets up its own logging
        _configure_logging(getattr(args, "verbose", False))
    try:
        code: int = args.run(args)
        return code
    except InvalidRequestError as exc:
        _error(cli_message(str(exc)))
        return 2
    except LlavaError as exc:
        _error(f"{type(exc).__name__}: {cli_message(str(exc))}")
        return 1
    except ImportError as exc:  # an optional extra is missing; the message names it
        _error(str(exc))
        return 1
    except KeyboardInterrupt:
        _error("interrupted")
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llava-bridge",
        description="Ask LLaVA Llama3 8B about images, on fal or your own GPU.",
    )
    parser.add_argument("--version", action="version", version=f"llava-bridge {__version__}")
    _add_verbose(parser, default=False)
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    ask = commands.add_parser("ask", help="ask a question about an image (or 2-4 of them, as a grid)")
    ask.add_argument(
        "images", nargs="+", metavar="image", help="image path, http(s) URL or data URI ('-' reads stdin)"
    )
    ask.add_argument("prompt", help="the question")
    ask.add_argument(
        "--multi-image",
        choices=["grid", "first", "last", "error"],
        default="grid",
        help="several images: tile 2-4 into one grid (default; the model sees one 336 px square, so each "
        "image gets less of it), or send only the first or last, or refuse",
    )
    _add_backend_options(ask)
    ask.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS, metavar="N")
    ask.add_argument("--temperature", type=float, default=None)
    ask.add_argument("--stream", action="store_true", help="print the answer as it is made")
    ask.add_argument("--json", action="store_true", help="print the whole result as JSON")
    _add_verbose(ask)
    ask.set_defaults(run=_ask)

    describe = commands.add_parser("describe", help="describe many images into a JSONL (or Parquet) file")
    describe.add_argument("sources", nargs="+", help="image files, directories, globs, URLs, or .txt lists")
    describe.add_argument("--out", required=True, type=Path, help="JSONL file (.parquet with --engine ray)")
    describe.add_argument("--prompt", default=None, help="what to ask about each image")
    describe.add_argument("--concurrency", type=int, default=4, metavar="N")
    describe.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS, metavar="N")
    describe.add_argument("--resume", action="store_true", help="skip images already described in --out")
    describe.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    describe.add_argument("--no-progress", action="store_true")
    describe.add_argument(
        "--engine",
        choices=("process", "ray"),
        default="process",
        help="process: this process, --concurrency requests at a time; ray: Ray Data actors "
        "(a local cluster, or the one at --address); .parquet --out files need ray",
    )
    describe.add_argument("--address", default=None, help="Ray cluster for --engine ray")
    describe.add_argument("--actors", type=int, default=None, metavar="N", help="Ray actors (--engine ray)")
    _add_backend_options(describe)
    _add_verbose(describe)
    describe.set_defaults(run=_describe)

    demo = commands.add_parser("demo", help="ask about a sample image (fal with FAL_KEY, else offline)")
    _add_verbose(demo)
    demo.set_defaults(run=_demo)

    serve = commands.add_parser(
        "serve",
        help="serve fal's queue protocol in front of a backend (see: llava-bridge serve --help)",
        add_help=False,  # `serve --help` is answered by the server's own parser
    )
    serve.set_defaults(run=_serve)
    return parser


def _add_verbose(parser: argparse.ArgumentParser, default: object = argparse.SUPPRESS) -> None:
    """`-v` before or after the command (after it, the default leaves the first one alone)."""
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=default,
        help="log each HTTP request (method, URL, status, ms) to stderr",
    )


def _add_backend_options(parser: argparse.ArgumentParser, default: str = "fal") -> None:
    parser.add_argument("--backend", choices=BACKEND_NAMES, default=default)
    parser.add_argument("--model", default=None, help="fal endpoint id, or local/OpenAI model name")
    parser.add_argument("--base-url", default=None, help="server URL (fal-compatible or OpenAI-compatible)")
    parser.add_argument("--api-key", default=None, metavar="KEY", help=API_KEY_HELP)


def _backend_from(args: argparse.Namespace) -> Backend:
    return make_backend(
        args.backend,
        model=args.model,
        api_key=args.api_key,
        base_url=args.base_url,
        fake_latency=getattr(args, "fake_latency", 0.0),
    )


def _read_image(value: str) -> ImageInput:
    if value == "-":
        return ImageInput.from_bytes(sys.stdin.buffer.read())
    return ImageInput.coerce(value, allow_paths=True)


def _ask(args: argparse.Namespace) -> int:
    from llava_bridge.conversation import choose_image

    sources = [partial(_read_image, value) for value in args.images]  # only the images sent are read
    request = VisionRequest(
        prompt=args.prompt,
        image=choose_image(sources, args.multi_image),
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
    )
    backend = _backend_from(args)
    if args.stream and not args.json:
        result = None
        for chunk in backend.stream(request):
            print(chunk.delta, end="", flush=True)
            result = chunk.result or result
        print()
        return 0
    result = backend.generate(request)
    _print_result(result, as_json=args.json)
    return 0


def _describe(args: argparse.Namespace) -> int:
    from llava_bridge.describe import check_output_path, format_summary

    out: Path = args.out
    check_output_path(out)
    if out.exists() and out.stat().st_size and not (args.resume or args.overwrite):
        raise InvalidRequestError(f"{out} exists; pass --resume to continue it or --overwrite to replace it.")
    if args.engine == "ray":
        from llava_bridge.ray.cli_engine import describe_from_args

        summary = describe_from_args(args)
    elif out.suffix.lower() == ".parquet":
        raise InvalidRequestError(f"{out}: Parquet output needs --engine ray; give a .jsonl file otherwise.")
    elif args.address or args.actors:
        raise InvalidRequestError("--address and --actors go with --engine ray.")
    else:
        summary = _describe_in_process(args)
    for line in format_summary(summary, out):
        print(cli_message(line), file=sys.stderr)
    if summary.interrupted:
        return 130
    return 0 if summary.ok else 1


def _describe_in_process(args: argparse.Namespace) -> DescribeSummary:
    from llava_bridge.cli.interrupt import run_cancellable
    from llava_bridge.describe import DEFAULT_DESCRIBE_PROMPT, describe_to_jsonl, expand_sources

    out: Path = args.out
    sources = expand_sources(args.sources)
    backend = _backend_from(args)
    return run_cancellable(
        describe_to_jsonl(
            backend,
            sources,
            out,
            prompt=args.prompt or DEFAULT_DESCRIBE_PROMPT,
            concurrency=args.concurrency,
            resume=args.resume,
            max_new_tokens=args.max_new_tokens,
            progress=not args.no_progress and sys.stderr.isatty(),
        )
    )


def _print_result(result: VisionResult, *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result.model_dump(mode="json"), indent=2))
    else:
        print(result.text)


def _demo(args: argparse.Namespace) -> int:
    image = ImageInput.from_bytes(resources.files("llava_bridge").joinpath("data/chelsea.png").read_bytes())
    request = VisionRequest(prompt=DEMO_PROMPT, image=image)
    width, height = image.size or (0, 0)
    print(f"Image: llava_bridge/data/chelsea.png ({width}x{height}, CC0, Stefan van der Walt)")
    print(f"Prompt: {DEMO_PROMPT}")
    if os.environ.get("FAL_KEY") or os.environ.get("FAL_KEY_ID"):
        base_url = os.environ.get("LLAVA_FAL_BASE_URL")
        where = f"the server at {base_url} (LLAVA_FAL_BASE_URL)" if base_url else "fal"
        print(f"Path: FalBackend (FAL_KEY is set) -> {where} -> {DEFAULT_ENDPOINT}")
        backend = make_backend("fal")
        result = backend.generate(request)
    else:
        result = _demo_offline(request)
    print(f"Answer: {result.text}")
    return 0


def _demo_offline(request: VisionRequest) -> VisionResult:
    print("Path: offline (no FAL_KEY set).")
    print(OFFLINE_NOTE)
    with tempfile.TemporaryDirectory(prefix="llava-bridge-demo-") as folder:
        model, described = _offline_model(Path(folder))
        try:
            from llava_bridge.server.background import BackgroundServer
        except ImportError:  # the [server] extra is not installed
            print(
                f"Asking {described} in process (for the local server, install the [server] extra: "
                'pip install -e ".[server]").'
            )
            return model.generate(request)
        from llava_bridge.backends.fal.backend import FalBackend

        with BackgroundServer(model) as server, FalBackend(base_url=server.url) as backend:
            print(f"Asking through FalBackend -> local fal-compatible server at {server.url} -> {described}")
            return backend.generate(request.model_copy(update={"max_new_tokens": 24}))


def _offline_model(folder: Path) -> tuple[Backend, str]:
    """The tiny random-weight LLaVA when the [local] extra is installed, else FakeBackend."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # the demo's output stays readable
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        from llava_bridge.backends.local.backend import TransformersBackend
        from llava_bridge.testing import build_tiny_llava

        path = build_tiny_llava(folder)
    except ImportError:
        return FakeBackend.image_facts(), "FakeBackend (answers from the image's size and colour)"
    backend = TransformersBackend(str(path), local_files_only=True)
    return backend, "a tiny random-weight LLaVA in TransformersBackend (gibberish by design)"


def _serve(args: argparse.Namespace) -> int:
    from llava_bridge.server.cli import main as serve_main

    return serve_main(["--verbose", *args.extra] if args.verbose else args.extra)


def _configure_logging(verbose: bool) -> None:
    """Warnings to stderr; with `verbose`, llava-bridge's own DEBUG lines too (one per request)."""
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    logging.getLogger("llava_bridge").setLevel(logging.DEBUG if verbose else logging.NOTSET)
    for handler in logging.getLogger().handlers:
        handler.setLevel(logging.DEBUG if verbose else logging.WARNING)


def _error(message: str) -> None:
    print(f"llava-bridge: error: {message}", file=sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
