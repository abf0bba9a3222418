"""Check a prompt/response JSONL file before training on it (the checks: :mod:`ttexp.data.pair_check`).

    python -m ttexp.validate_data data.jsonl                       # report; exit 0 ok, 1 errors
    python -m ttexp.validate_data data.jsonl --json                # the report as JSON
    python -m ttexp.validate_data data.jsonl --tokenizer MODEL_DIR --max-tokens 2048
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional

from ttexp.data.pair_check import DEFAULT_MAX_TOKENS, format_report, validate_file
from ttexp.data.template import DEFAULT_TEMPLATE
from ttexp.errors import TtexpError
from ttexp.models.pretrained import load_tokenizer


def main(argv: Optional[list[str]] = None) -> int:
    """The command line; returns the exit status (0 valid, 1 errors)."""
    parser = argparse.ArgumentParser(prog="python -m ttexp.validate_data", description=__doc__.split("\n\n")[0])
    parser.add_argument("file", help="JSONL file of {\"prompt\": ..., \"response\": ...} lines")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--tokenizer", help="model directory whose tokenizer counts tokens (default: bytes)")
    parser.add_argument("--max-tokens", type=int, default=DEFAULT_MAX_TOKENS,
                        help=f"token limit per example (default {DEFAULT_MAX_TOKENS})")
    parser.add_argument("--template", default=DEFAULT_TEMPLATE, help="prompt template with {prompt}")
    args = parser.parse_args(argv)
    tokenizer = None
    if args.tokenizer:
        try:
            tokenizer = load_tokenizer(Path(args.tokenizer))
        except TtexpError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    report = validate_file(args.file, tokenizer, args.template, args.max_tokens)
    print(json.dumps(report.to_dict(), indent=2) if args.json else format_report(report))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
