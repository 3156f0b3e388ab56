"""The command line of ``python -m platform.label`` (platform/label/cli.py): its options, their
defaults and the checks they pass before anything is read or sent.

    python -m platform.label --help
"""

from __future__ import annotations

import argparse
import urllib.parse

from platform.errors import UserError
from platform.label import batch_files, inputs, prompt, secret
from platform.tracking import progress

DEFAULT_MODEL = "openai/gpt-4o-mini"
DEFAULT_BASE_URL = "https://openrouter.ai/api/v1"
DEFAULT_RPM = 120
DEFAULT_CONCURRENCY = 8  # the seed's
# USD per million tokens (prompt, completion), for --dry-run and the ledger; others need --price-in/out.
KNOWN_PRICES = {
    "openai/gpt-4o-mini": (0.15, 0.60),
    "openai/gpt-4o": (2.50, 10.00),
    "google/gemini-2.0-flash-001": (0.10, 0.40),
    "anthropic/claude-3.5-haiku": (0.80, 4.00),
}


def build_parser(doc: str) -> argparse.ArgumentParser:
    """The parser; ``doc`` (the command's module docstring) gives its description and epilog."""
    parser = argparse.ArgumentParser(
        prog="python -m platform.label",
        description=doc.split("\n\n")[0],
        epilog=doc.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("source", help="the table to label (gender_bias: posts.csv), or the folder holding it")
    parser.add_argument(
        "--task",
        default=None,
        help="what to ask: a trainable with a labeling.py, or a module path like mytasks.toxicity (default: the only trainable with one)",
    )
    parser.add_argument("--out", default=None, help="output folder (default <source folder>/labeled)")
    parser.add_argument("--cache", default=None, help="cache folder (default <out>/cache)")
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"vision model (default {DEFAULT_MODEL})")
    parser.add_argument("--base-url", default=DEFAULT_BASE_URL, help=f"OpenAI-compatible API (default {DEFAULT_BASE_URL})")
    limit = parser.add_mutually_exclusive_group()
    limit.add_argument("--rpm", type=float, default=None, help=f"requests per minute for the whole job (default {DEFAULT_RPM})")
    limit.add_argument("--rps", type=float, default=None, help="requests per second for the whole job")
    parser.add_argument(
        "--tpm",
        type=float,
        default=None,
        help="tokens per minute for the whole job (prompt + max_tokens estimated before each send, "
        "corrected from the reply's usage; default: no limit)",
    )
    parser.add_argument(
        "--concurrency", type=int, default=DEFAULT_CONCURRENCY, help=f"requests in flight for the whole job (default {DEFAULT_CONCURRENCY})"
    )
    parser.add_argument("--actors", type=int, default=2, help="Ray Data actors sending requests (default 2)")
    parser.add_argument("--budget-usd", type=float, default=None, help="stop once this run has spent this much (exit 3)")
    parser.add_argument("--max-retries", type=int, default=4, help="retries a row gets after its first attempt (default 4)")
    parser.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        help="seconds to wait for one reply (default 60); also the longest a 429's Retry-After pauses the job (never more than 60)",
    )
    parser.add_argument(
        "--backoff", type=float, default=1.0, help="base of the exponential backoff in seconds, with full jitter (default 1)"
    )
    parser.add_argument("--price-in", type=float, default=None, help="USD per million prompt tokens (default: known models)")
    parser.add_argument("--price-out", type=float, default=None, help="USD per million completion tokens")
    parser.add_argument(
        "--image-tokens",
        type=int,
        default=None,
        help="prompt tokens an image costs, for --dry-run and --tpm (default: OpenAI's rule for "
        f"the task's detail level: {prompt.IMAGE_TOKENS_LOW_DETAIL} at 'low')",
    )
    parser.add_argument("--retry-quarantined", action="store_true", help="ask again for rows whose cached reply was invalid")
    parser.add_argument(
        "--allow-outside-images", action="store_true", help="send images whose image_path is outside the source folder (refused by default)"
    )
    parser.add_argument(
        "--batch",
        action="store_true",
        help="send through the Batch API (upload, create, poll, download) at its lower price; a "
        "re-run resumes the saved batches (platform/label/batch.py)",
    )
    parser.add_argument(
        "--poll",
        type=float,
        default=batch_files.DEFAULT_POLL_S,
        help=f"--batch: seconds between polls of a batch (default {batch_files.DEFAULT_POLL_S:g})",
    )
    parser.add_argument(
        "--batch-discount",
        type=float,
        default=batch_files.BATCH_DISCOUNT,
        help=f"--batch: the batch price as a share of the online one (default {batch_files.BATCH_DISCOUNT:g}, OpenAI's)",
    )
    parser.add_argument("--dry-run", action="store_true", help="estimate requests, tokens and cost; send nothing")
    parser.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS or a local Ray)")
    parser.add_argument(
        "--progress",
        choices=progress.CHOICES,
        default="auto",
        help="a progress bar of the image scan (default auto: when output is a terminal)",
    )
    parser.add_argument("--verbose", action="store_true", help="also print Ray's own log lines (its core's, its internal actors')")
    return parser


def check_args(args: argparse.Namespace) -> float:
    """Validates the numbers; returns requests per second."""
    for name in ("concurrency", "actors"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name} must be at least 1")
    if args.max_retries < 0 or args.timeout <= 0 or args.backoff < 0:
        raise UserError("--max-retries must be >= 0, --timeout > 0 and --backoff >= 0")
    if args.budget_usd is not None and args.budget_usd <= 0:
        raise UserError("--budget-usd must be positive")
    if (args.price_in is None) != (args.price_out is None):
        raise UserError("give both --price-in and --price-out")
    if args.tpm is not None and not args.tpm > 0:
        raise UserError("--tpm must be positive")
    if args.image_tokens is not None and args.image_tokens < 0:
        raise UserError("--image-tokens must be >= 0")
    if not args.poll > 0 or not 0 < args.batch_discount <= 1:
        raise UserError("--poll must be positive and --batch-discount in (0, 1]")
    if args.batch and (args.rpm, args.rps, args.tpm) != (None, None, None):
        raise UserError("--rpm, --rps and --tpm limit online requests: a batch runs under the provider's batch limits")
    rps = args.rps if args.rps is not None else (args.rpm if args.rpm is not None else DEFAULT_RPM) / 60
    if not rps > 0:
        raise UserError("--rpm/--rps must be positive")
    check_base_url(args.base_url)
    return rps


def check_base_url(base_url: str) -> None:
    """A malformed URL is one error line now, not a connection error later. One that carries a
    credential is refused: it would be written to ledger.json and handed to Ray with the actors'
    settings, and it cannot work anyway (the client sends a user:password@ part as basic auth in
    place of the key, and appends its paths after a query). The key belongs in KEY_VARIABLES,
    which each process that sends reads from its own environment (platform/label/secret.py)."""
    inputs.provider(base_url)
    parts = urllib.parse.urlsplit(base_url.strip())
    where = "a user:password@ part" if "@" in parts.netloc else "a query string" if parts.query else None
    if where:
        raise UserError(
            f"--base-url {inputs.shown(base_url)!r} carries {where}: give the API without it and the key in "
            f"{secret.KEY_VARIABLES[0]} (or {secret.KEY_VARIABLES[1]}), never in the URL (it would be written to ledger.json)"
        )


def prices(args: argparse.Namespace) -> tuple[float, float] | None:
    if args.price_in is not None:
        return args.price_in, args.price_out
    return KNOWN_PRICES.get(args.model)
