"""Command-line flags of `llava-bridge serve` (also `python -m llava_bridge.server`).

`add_serve_arguments(parser)` adds the flags to any argparse parser;
`serve_from_args(args)` checks the flags, builds the backend, loads a local model,
and serves. Flags that cannot work (an endpoint id the server cannot serve, an
unknown --db scheme) stop it before anything loads: one line, exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from pydantic import SecretStr

from llava_bridge.backends.base import Backend
from llava_bridge.backends.factory import make_backend
from llava_bridge.errors import ConfigurationError, LlavaError
from llava_bridge.server.jobs import check_job_store_location
from llava_bridge.server.serving import configure_logging, serve
from llava_bridge.server.settings import DEFAULT_DB_PATH, DEFAULT_ENDPOINTS, ServerSettings

__all__ = ["API_KEY_ENV", "UsageError", "add_serve_arguments", "main", "serve_from_args"]

API_KEY_ENV = "LLAVA_BRIDGE_SERVER_KEY"
"""Environment variable read for the server's API key when --api-key is not given."""
LOCAL_ONLY_FLAGS = (
    "quantization",
    "device",
    "dtype",
    "revision",
    "local_files_only",
    "max_batch_size",
    "batch_wait_ms",
)
"""Flags that only `--backend local` takes (passed to TransformersBackend)."""
FAKE_NOTE = "The fake backend makes its answers up (no model runs): they are NOT real model output."


class UsageError(ConfigurationError):
    """A flag's value cannot work; `main` prints it in one line and exits with status 2."""


def add_serve_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the serve flags to `parser`."""
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    parser.add_argument(
        "--backend",
        choices=("fake", "local", "openai", "fal"),
        default="fake",
        help="what answers (default fake)",
    )
    parser.add_argument(
        "--model", default=None, help="the backend's model (local: a Hugging Face id or path)"
    )
    parser.add_argument(
        "--base-url", default=None, help="openai backend: the server's URL (vLLM, llama.cpp, ...)"
    )
    parser.add_argument("--quantization", choices=("4bit", "8bit"), default=None, help="local backend")
    parser.add_argument("--device", default=None, help="local backend: cuda, cuda:1, mps or cpu")
    parser.add_argument("--dtype", default=None, help="local backend: bfloat16, float16 or float32")
    parser.add_argument("--revision", default=None, help="local backend: the Hub branch, tag or commit")
    parser.add_argument(
        "--local-files-only",
        action="store_const",
        const=True,
        default=None,
        help="local backend: never download; the model must be cached or a directory",
    )
    parser.add_argument(
        "--max-batch-size", type=int, default=None, help="local backend: requests per batch (default 8)"
    )
    parser.add_argument(
        "--batch-wait-ms",
        type=float,
        default=None,
        help="local backend: how long to collect a batch (default 5; 0 runs at once)",
    )
    parser.add_argument(
        "--upstream-extra-body",
        default=None,
        metavar="JSON",
        help="openai backend: fields added to every upstream request, e.g. '{\"stop_token_ids\": [128009]}'",
    )
    parser.add_argument(
        "--no-upstream-stop",
        dest="upstream_stop",
        action="store_const",
        const=False,
        default=None,
        help="openai backend: never send 'stop' upstream (transformers serve fails on it; "
        "by default it is left out after such a failure); stops are cut here either way",
    )
    parser.add_argument(
        "--upstream-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="openai backend: a wall clock over each upstream call (default: none)",
    )
    parser.add_argument(
        "--upstream-key-env",
        default=None,
        metavar="VAR",
        help="openai backend: the environment variable that holds the upstream server's API key "
        "(the name, not the key: command lines are visible to other users)",
    )
    parser.add_argument(
        "--api-key",
        default=None,
        help=f"require 'Authorization: Key <key>' (default: ${API_KEY_ENV} if set, else no key; "
        f"${API_KEY_ENV} is safer: other users of this machine can see command lines)",
    )
    parser.add_argument(
        "--db", default=None, help=f"SQLite job database (default {DEFAULT_DB_PATH}; ':memory:')"
    )
    parser.add_argument("--fake-latency", type=float, default=0.0, help="fake backend: seconds per job")
    parser.add_argument(
        "--fake-answers",
        default="canned",
        metavar="WHAT",
        help="fake backend: 'canned' (default), 'image-facts', or package.module:function of the request",
    )
    parser.add_argument(
        "--concurrency", type=int, default=4, help="jobs handed to the backend at once (default 4)"
    )
    parser.add_argument(
        "--endpoint",
        action="append",
        default=None,
        help=f"an endpoint id to serve, repeatable (default: {', '.join(DEFAULT_ENDPOINTS)})",
    )
    parser.add_argument(
        "--max-body-mb", type=float, default=16.0, help="request body cap in MiB (default 16)"
    )
    parser.add_argument(
        "--result-retention", type=float, default=3600.0, help="seconds results are kept (default 3600)"
    )
    parser.add_argument(
        "--allow-private-urls",
        action="store_true",
        help="let image URLs reach private, loopback and link-local addresses (off by default: SSRF guard)",
    )
    parser.add_argument(
        "--allow-url-host",
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="one private host image URLs may reach, repeatable (narrower than --allow-private-urls)",
    )
    parser.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="without an API key, also answer requests addressed (Host header) to NAME, repeatable "
        "(always: localhost, 127.0.0.1, [::1] and the --host address)",
    )
    parser.add_argument(
        "--header-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="close connections whose request headers take longer than this (default 10)",
    )
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    parser.add_argument("-v", "--verbose", action="store_true", help="the same as --log-level debug")
    return parser


def serve_from_args(args: argparse.Namespace) -> None:
    """Build the backend the flags name, load its model, and serve it (blocking).

    Raises `LlavaError` (one line naming the model) when a local model cannot load.
    """
    log_level = "debug" if args.verbose else args.log_level
    settings = _settings(args)
    configure_logging(log_level)  # the local model's loading is logged
    backend = _ready_backend(args)
    if args.api_key:
        _warn(f"--api-key is visible to other users of this machine; set {API_KEY_ENV} instead.")
    serve(host=args.host, port=args.port, backend=backend, settings=settings, log_level=log_level)


def _settings(args: argparse.Namespace) -> ServerSettings:
    """The server settings the flags give; UsageError when they cannot work."""
    key: str | None = args.api_key or os.environ.get(API_KEY_ENV)
    try:
        settings = ServerSettings(
            db_path=args.db or DEFAULT_DB_PATH,
            api_key=SecretStr(key) if key else None,
            endpoints=tuple(args.endpoint or DEFAULT_ENDPOINTS),
            concurrency=args.concurrency,
            max_body_bytes=int(args.max_body_mb * 1024 * 1024),
            result_retention_s=args.result_retention,
            purge_interval_s=min(60.0, max(args.result_retention / 4, 0.5)),
            allow_private_urls=args.allow_private_urls,
            allowed_url_hosts=tuple(args.allow_url_host),
            allowed_hosts=tuple(args.allowed_host),
            header_timeout_s=args.header_timeout,
        )
        check_job_store_location(settings.db_path)
    except ConfigurationError as exc:
        raise UsageError(str(exc)) from None
    return settings


def _ready_backend(args: argparse.Namespace) -> Backend:
    """The backend, with a local model loaded (so that a broken one fails before serving)."""
    local_options = {
        name: getattr(args, name) for name in LOCAL_ONLY_FLAGS if getattr(args, name) is not None
    }
    if local_options and args.backend != "local":
        flags = ", ".join(f"--{name.replace('_', '-')}" for name in local_options)
        raise UsageError(f"{flags} only apply to --backend local.")
    try:
        backend = _backend_from_flags(args, local_options)
    except ConfigurationError as exc:  # every one of make_backend's refusals is about a flag
        raise UsageError(str(exc)) from None
    if args.backend == "fake":
        _warn(FAKE_NOTE)
    if args.backend == "local":
        from llava_bridge.backends.local.backend import TransformersBackend

        assert isinstance(backend, TransformersBackend)
        try:
            backend.load()
        except Exception as exc:  # whatever stops the model loading, said in one line
            message = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
            if backend.model_name not in message:
                message = f"The local model {backend.model_name!r} did not load: {message}"
            raise ConfigurationError(message) from None
    return backend


def _backend_from_flags(args: argparse.Namespace, local_options: dict[str, Any]) -> Backend:
    """make_backend with what the flags say."""
    return make_backend(
        args.backend,
        model=args.model,
        base_url=args.base_url,
        fake_latency=args.fake_latency,
        fake_answers=args.fake_answers,
        upstream_extra_body=args.upstream_extra_body,
        upstream_stop=args.upstream_stop,
        upstream_timeout=args.upstream_timeout,
        upstream_key_env=args.upstream_key_env,
        **local_options,
    )


def _warn(message: str) -> None:
    print(f"llava-bridge serve: {message}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """`llava-bridge serve`; one line on stderr and status 2 (bad flags) or 1 when it cannot start."""
    parser = add_serve_arguments(
        argparse.ArgumentParser(prog="llava-bridge serve", description="Serve a backend over fal's protocol.")
    )
    try:
        serve_from_args(parser.parse_args(argv))
    except UsageError as exc:
        print(f"llava-bridge serve: error: {exc}", file=sys.stderr, flush=True)
        return 2
    except LlavaError as exc:
        print(f"llava-bridge serve: error: {exc}", file=sys.stderr, flush=True)
        return 1
    except ImportError as exc:  # an optional extra is missing; the message names it
        print(f"llava-bridge serve: error: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0
