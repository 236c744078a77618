"""``vit-digits``: the service from the command line.

    vit-digits predict a.png b.jpg ...   a table of answers (--json: JSON), one row per file, in order
    vit-digits models                    the served models

The server is ``--url``, else ``$VIT_DIGITS_URL``, else http://localhost:8000; the API key
``--api-key``, else ``$VIT_DIGITS_API_KEY``. Exit status: 0 if every file got an answer, 1 if some
got an error of their own, 2 if the call failed as a whole (unreachable, refused, bad usage).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from vit_digits_client.client import Client
from vit_digits_client.errors import VitDigitsError
from vit_digits_client.progress import ProgressBar
from vit_digits_client.results import ModelInfo, Prediction

MANY_FILES = 20  # from this many files on, a progress bar is drawn on a terminal


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        with Client(args.url, api_key=args.api_key, timeout=args.timeout) as client:
            if args.command == "models":
                return _models(client, args.json, sys.stdout)
            return _predict(client, args, sys.stdout, sys.stderr)
    except VitDigitsError as exc:
        print(f"vit-digits: {exc}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help="the server (default: $VIT_DIGITS_URL, else http://localhost:8000)")
    common.add_argument("--api-key", help="X-API-Key to send (default: $VIT_DIGITS_API_KEY)")
    common.add_argument("--timeout", type=float, default=30.0, help="seconds per request, retries included")
    common.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser = argparse.ArgumentParser(prog="vit-digits", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    predict = commands.add_parser("predict", parents=[common], help="classify pictures of digits")
    predict.add_argument("files", nargs="+", type=Path, help="pictures: PNG, JPEG, GIF, BMP, WebP or TIFF")
    predict.add_argument("--model", help="a model id (vit-digits models); the server's default if omitted")
    predict.add_argument("--top-k", type=int, default=3, help="how many of the most probable digits to list")
    predict.add_argument("--reject", action="store_true", help="a picture that is not a digit is an error")
    predict.add_argument(
        "--progress",
        choices=("auto", "always", "never"),
        default="auto",
        help=f"progress bar on stderr (auto: on a terminal, from {MANY_FILES} files on)",
    )
    commands.add_parser("models", parents=[common], help="list the served models")
    return parser


def _predict(client: Client, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    missing = [str(path) for path in args.files if not path.is_file()]
    if missing:
        print(f"vit-digits: no such file: {', '.join(missing)}", file=err)
        return 2
    show = args.progress == "always" or (args.progress == "auto" and err.isatty() and len(args.files) >= MANY_FILES)
    bar = ProgressBar(len(args.files), err) if show else None
    try:
        results = client.predict_many(
            args.files, model=args.model, top_k=args.top_k, reject=args.reject or None, progress=bar
        )
    finally:
        if bar is not None:
            bar.close()
    rows = list(zip((str(path) for path in args.files), results, strict=True))
    out.write(_json(rows) if args.json else _table(rows))
    return 1 if any(isinstance(result, VitDigitsError) for _, result in rows) else 0


def _json(rows: list[tuple[str, Prediction | VitDigitsError]]) -> str:
    items: list[dict[str, Any]] = []
    for name, result in rows:
        if isinstance(result, VitDigitsError):
            items.append({"file": name, "error": {"code": result.code, "message": result.message}})
        else:
            items.append({"file": name, "prediction": dataclasses.asdict(result)})
    return json.dumps(items, indent=2) + "\n"


def _table(rows: list[tuple[str, Prediction | VitDigitsError]]) -> str:
    lines: list[tuple[str, ...]] = [("file", "digit", "confidence", "is_digit", "digit_score", "error")]
    for name, result in rows:
        if isinstance(result, VitDigitsError):
            lines.append((name, "-", "-", "-", "-", str(result)))
        else:
            yes = "yes" if result.is_digit else "no"
            lines.append((name, str(result.digit), f"{result.confidence:.4f}", yes, f"{result.digit_score:.3f}", ""))
    return _columns(lines)


def _models(client: Client, as_json: bool, out: TextIO) -> int:
    models = client.models()
    if as_json:
        out.write(json.dumps([dataclasses.asdict(model) for model in models], indent=2) + "\n")
        return 0
    lines: list[tuple[str, ...]] = [("id", "default", "runtime", "parameters", "test_accuracy", "threshold")]
    lines += [_model_row(model) for model in models]
    out.write(_columns(lines))
    return 0


def _model_row(model: ModelInfo) -> tuple[str, ...]:
    accuracy = "-" if model.test_accuracy is None else f"{model.test_accuracy:.4f}"
    threshold = "-" if model.calibration.threshold is None else f"{model.calibration.threshold:.3f}"
    default = "yes" if model.default else ""
    return (model.id, default, model.runtime, str(model.parameters), accuracy, threshold)


def _columns(lines: list[tuple[str, ...]]) -> str:
    """``lines`` as left-aligned columns, the last one unpadded."""
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]) - 1)]
    return "".join(
        "  ".join([*(c.ljust(w) for c, w in zip(line, widths, strict=False)), line[-1]]).rstrip() + "\n"
        for line in lines
    )


if __name__ == "__main__":
    sys.exit(main())
