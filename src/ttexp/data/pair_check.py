"""The prompt/response JSONL checker behind ``python -m ttexp.validate_data`` and task=finetune.

    python -m ttexp.validate_data data.jsonl                       # report; exit 0 ok, 1 errors
    python -m ttexp.validate_data data.jsonl --json                # the report as JSON
    python -m ttexp.validate_data data.jsonl --tokenizer MODEL_DIR --max-tokens 2048

Errors (exit 1), each with its line number: a line that is not valid UTF-8 or not JSON, a value
that is not an object, a missing, non-string or empty (blank) ``prompt`` or ``response``, a file
with no examples. Warnings (exit 0): examples over ``--max-tokens`` tokens (template, response and
EOS) or over 500 characters, duplicate prompts or responses, extra keys, low diversity of the
responses' first words (< 30 %). Statistics in characters and tokens. The byte tokenizer (one
token per UTF-8 byte) is used unless ``--tokenizer`` names a model directory. ``task=finetune``
runs the same checks with the run's tokenizer, template and ``model.max_seq_len`` first.

The validator never raises on bad input: every problem becomes an error in the report.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ttexp.data.template import DEFAULT_TEMPLATE, format_prompt
from ttexp.models.pretrained import load_tokenizer

FIELDS = ("prompt", "response")
MAX_CHARS = 500
"""Characters per prompt or response above which a warning is given (the lessons' limit)."""
DEFAULT_MAX_TOKENS = 512
"""Tokens per example above which a warning is given (ct2: keep prompt and response under 512)."""
MIN_FIRST_WORD_DIVERSITY = 0.3


@dataclass
class Issue:
    """One problem; ``line`` is 1-based (0 = the whole file)."""

    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line else self.message


@dataclass
class Report:
    """What the validator found. ``pairs`` holds ``(line, prompt, response)`` of valid lines."""

    path: str
    errors: list[Issue] = field(default_factory=list)
    warnings: list[Issue] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    pairs: list[tuple[int, str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "ok": self.ok, "errors": [asdict(e) for e in self.errors],
                "warnings": [asdict(w) for w in self.warnings], "stats": self.stats,
                "samples": [{"line": n, "prompt": p, "response": r} for n, p, r in self.pairs[:3]]}


def _parse_line(number: int, raw: bytes, report: Report) -> None:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        report.errors.append(Issue(number, f"not valid UTF-8 (byte {exc.start} of the line); "
                                           "save the file as UTF-8"))
        return
    if not text.strip():
        return  # blank lines are allowed
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as exc:
        report.errors.append(Issue(number, f"not valid JSON ({exc})"[:200]))
        return
    if not isinstance(obj, dict):
        report.errors.append(Issue(number, f"expected a JSON object with prompt and response, "
                                           f"got {type(obj).__name__}"))
        return
    bad = False
    for key in FIELDS:
        if key not in obj:
            report.errors.append(Issue(number, f"missing field '{key}'"))
            bad = True
        elif not isinstance(obj[key], str):
            report.errors.append(Issue(number, f"field '{key}' must be a string, got "
                                               f"{type(obj[key]).__name__}"))
            bad = True
        elif not obj[key].strip():
            report.errors.append(Issue(number, f"field '{key}' is empty"))
            bad = True
    extra = sorted(set(obj) - set(FIELDS))
    if extra:
        report.warnings.append(Issue(number, f"extra keys ignored: {', '.join(extra)}"))
    if not bad:
        report.pairs.append((number, obj["prompt"], obj["response"]))


def _describe(values: list[int]) -> dict[str, float]:
    return {"min": min(values), "max": max(values), "mean": round(statistics.fmean(values), 1)}


def _duplicates(report: Report, index: int, what: str) -> None:
    seen: dict[str, list[int]] = defaultdict(list)
    for pair in report.pairs:
        seen[pair[index].strip()].append(pair[0])
    for text, lines in seen.items():
        if len(lines) > 1:
            shown = text if len(text) <= 50 else text[:47] + "..."
            report.warnings.append(Issue(lines[1], f"duplicate {what} (also on line {lines[0]}"
                                                   f"{'' if len(lines) == 2 else ' and others'}): {shown!r}"))


def _check_content(report: Report, tokenizer: Any, template: str, max_tokens: int) -> None:
    pairs = report.pairs
    for number, prompt, response in pairs:
        for key, text in (("prompt", prompt), ("response", response)):
            if len(text) > MAX_CHARS:
                report.warnings.append(Issue(number, f"{key} has {len(text)} characters (> {MAX_CHARS})"))
    _duplicates(report, 1, "prompt")
    _duplicates(report, 2, "response")
    prompt_tokens = [len(tokenizer.encode(format_prompt(template, p))) for _, p, _ in pairs]
    response_tokens = [len(tokenizer.encode_plain(r)) + 1 for _, _, r in pairs]  # + EOS
    for (number, _, _), pt, rt in zip(pairs, prompt_tokens, response_tokens):
        if pt + rt - 1 > max_tokens:  # the model reads all tokens but the last
            report.warnings.append(Issue(number, f"{pt + rt} tokens exceed the limit of {max_tokens} "
                                                 "(the start of the prompt will be cut)"))
    first_words = {r.split()[0].lower().strip(".,!?:;\"'") for _, _, r in pairs}
    diversity = len(first_words) / len(pairs)
    if diversity < MIN_FIRST_WORD_DIVERSITY:
        report.warnings.append(Issue(0, f"low diversity: responses start with only "
                                        f"{len(first_words)} different words in {len(pairs)} examples "
                                        f"({diversity:.0%} < {MIN_FIRST_WORD_DIVERSITY:.0%})"))
    report.stats.update(
        examples=len(pairs),
        prompt_chars=_describe([len(p) for _, p, _ in pairs]),
        response_chars=_describe([len(r) for _, _, r in pairs]),
        prompt_tokens=_describe(prompt_tokens),
        response_tokens=_describe(response_tokens),
        total_tokens=_describe([p + r for p, r in zip(prompt_tokens, response_tokens)]),
        questions=round(sum("?" in p for _, p, _ in pairs) / len(pairs), 3),
        first_word_diversity=round(diversity, 3),
        max_tokens=max_tokens,
    )


def validate_file(path: Path | str, tokenizer: Any = None, template: str = DEFAULT_TEMPLATE,
                  max_tokens: int = DEFAULT_MAX_TOKENS) -> Report:
    """Check ``path`` and return the report (never raises for bad input).

    Args:
        path: a JSONL file of ``{"prompt": str, "response": str}`` objects.
        tokenizer: a :class:`~ttexp.models.pretrained.PromptTokenizer`; None = the byte tokenizer.
        template: the prompt template the examples will be trained with.
        max_tokens: the model's context (``model.max_seq_len``); longer examples get a warning.
    """
    report = Report(str(path))
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        report.errors.append(Issue(0, f"cannot read {path}: {exc.strerror or exc}"))
        return report
    for number, line in enumerate(raw.split(b"\n"), start=1):
        _parse_line(number, line.rstrip(b"\r"), report)
    if not report.pairs and not report.errors:
        report.errors.append(Issue(0, "the file holds no examples"))
    if report.pairs:
        if tokenizer is None:
            tokenizer = load_tokenizer(None)
        _check_content(report, tokenizer, template, max_tokens)
    return report


def format_report(report: Report, limit: int = 20) -> str:
    """The human-readable report: verdict, errors, warnings, statistics and three samples."""
    out = [f"Dataset: {report.path}"]
    s = report.stats
    if s:
        out.append(f"Examples: {s['examples']} ({s['questions']:.0%} of prompts are questions, "
                   f"first-word diversity {s['first_word_diversity']:.0%})")
        for key, unit in (("prompt_chars", "Prompt characters"), ("response_chars", "Response characters"),
                          ("prompt_tokens", "Prompt tokens (templated)"),
                          ("response_tokens", "Response tokens (+EOS)"), ("total_tokens", "Total tokens")):
            d = s[key]
            out.append(f"  {unit}: min {d['min']}, max {d['max']}, mean {d['mean']}")
    for title, issues in (("Errors", report.errors), ("Warnings", report.warnings)):
        if issues:
            out.append(f"{title} ({len(issues)}):")
            out += [f"  {i}" for i in issues[:limit]]
            if len(issues) > limit:
                out.append(f"  ... and {len(issues) - limit} more")
    if report.pairs:
        out.append("Samples:")
        for number, prompt, response in report.pairs[:3]:
            out.append(f"  line {number}: {prompt!r} -> {response[:80]!r}{'...' if len(response) > 80 else ''}")
    verdict = "VALIDATION PASSED" if report.ok else f"VALIDATION FAILED with {len(report.errors)} errors"
    out.append(verdict + (f" ({len(report.warnings)} warnings)" if report.warnings else ""))
    return "\n".join(out)
