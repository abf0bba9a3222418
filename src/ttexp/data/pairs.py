"""Prompt/response pairs for fine-tuning: template, tokens, loss mask, padding, split, batches.

Each example becomes ``[BOS] template(prompt) response EOS``. The loss is taken on the response
tokens and the EOS only; the *first* response token is included (it is predicted from the last
prompt position; the lessons' script masked it by mistake). Batches are padded on the right to
their longest example (not to the context length), with an attention mask. An example longer
than ``max_seq_len`` loses the start of its prompt first; only a response that alone does not fit
is cut at its end.

Training batches follow a seeded shuffle per epoch: micro-batch ``(step, micro_step)`` takes
examples ``[k * B, (k + 1) * B)`` of the endless stream of epochs, ``k = step * accumulation +
micro_step``, so the order depends only on the step (resume and data-parallel ranks need no
sampler state) and every example is seen once per epoch.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np

from ttexp.config.schema import DataConfig
from ttexp.data.batch import IGNORE_INDEX, Batch
from ttexp.files import sha256_of
from ttexp.data.corpus import resolve_corpus
from ttexp.data.pair_check import validate_file
from ttexp.data.template import DEFAULT_TEMPLATE, format_prompt
from ttexp.errors import DataError, TtexpError

log = logging.getLogger("ttexp")


@dataclass(frozen=True)
class Example:
    """One tokenised example.

    Attributes:
        ids: ``[BOS] prompt response EOS`` token ids, length ``L <= max_seq_len + 1``.
        response_start: index in ``ids`` of the first response token.
        truncated: 'prompt' or 'response' when tokens were cut, else ''.
    """

    ids: tuple[int, ...]
    response_start: int
    truncated: str = ""


def encode_example(prompt: str, response: str, tokenizer: Any, template: str,
                   max_seq_len: int) -> Example:
    """Tokenise one pair (see the module docstring for the layout and the truncation rule).

    ``max_seq_len`` bounds the model's input, ``len(ids) - 1``. ``tokenizer`` is a
    :class:`~ttexp.models.pretrained.PromptTokenizer` (``encode``, ``encode_plain``, ``eos_token_id``).
    """
    prompt_ids = tokenizer.encode(format_prompt(template, prompt))
    response_ids = tokenizer.encode_plain(response) + [tokenizer.eos_token_id]
    budget = max_seq_len + 1
    truncated = ""
    if len(prompt_ids) + len(response_ids) > budget:
        keep_head = 1 if tokenizer.bos_token_id is not None else 0  # keep BOS
        room = budget - len(response_ids)
        if room >= keep_head + 1:  # cut the prompt's start, keep its end ("### Answer:")
            prompt_ids = prompt_ids[:keep_head] + prompt_ids[len(prompt_ids) - (room - keep_head):]
            truncated = "prompt"
        else:  # the response alone does not fit: keep the last prompt token, cut the response
            prompt_ids = prompt_ids[:keep_head] + prompt_ids[-1:]
            response_ids = response_ids[: budget - len(prompt_ids)]
            truncated = "response"
    return Example(tuple(prompt_ids + response_ids), len(prompt_ids), truncated)


def collate(examples: Sequence[Example], pad_token_id: int) -> Batch:
    """Pad ``examples`` on the right to the longest one and build shifted, masked labels.

    Returns a :class:`Batch` with ``inputs``/``labels``/``attention_mask`` of shape ``[B, T]``,
    ``T = max(len(ids)) - 1``: ``labels[b, t] = ids[t + 1]`` where ``t + 1`` is a response or
    EOS position, ``IGNORE_INDEX`` on prompt and padding positions; ``attention_mask`` is 1 on
    real tokens and 0 on padding.
    """
    width = max(len(e.ids) for e in examples) - 1
    n = len(examples)
    inputs = np.full((n, width), pad_token_id, dtype=np.int64)
    labels = np.full((n, width), IGNORE_INDEX, dtype=np.int64)
    mask = np.zeros((n, width), dtype=np.int64)
    for row, ex in enumerate(examples):
        ids = np.asarray(ex.ids, dtype=np.int64)
        length = len(ids) - 1
        inputs[row, :length] = ids[:-1]
        mask[row, :length] = 1
        first = ex.response_start - 1  # the position that predicts the first response token
        labels[row, first:length] = ids[first + 1:]
    return Batch(inputs=inputs, labels=labels, attention_mask=mask)


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded random split of ``n`` examples into (train, validation) index lists.

    Validation gets ``round(n * val_fraction)`` examples, at least 1 when ``val_fraction > 0``,
    and training keeps at least 1. Both lists are sorted (file order).
    """
    n_val = 0 if val_fraction <= 0 else min(n - 1, max(1, round(n * val_fraction)))
    order = np.random.default_rng([seed, 0x5EED]).permutation(n)
    return sorted(order[n_val:].tolist()), sorted(order[:n_val].tolist())


class PairData:
    """Training and validation examples with the loop's :class:`~ttexp.train.loop.TrainData` interface.

    Args:
        train: tokenised training examples.
        val: tokenised validation examples (may be empty: validation then raises in the backend).
        pad_token_id: filler for padded positions (never attended to, never scored).
        seed: seeds the per-epoch shuffle.
        gradient_accumulation_steps: micro-steps per optimizer step (fixes the stream position).
        template: the prompt template, applied to validation questions by :meth:`format_prompt`.

    Raises:
        DataError: there are no training examples.
    """

    def __init__(self, train: Sequence[Example], val: Sequence[Example], pad_token_id: int,
                 seed: int, gradient_accumulation_steps: int, template: str = DEFAULT_TEMPLATE):
        if not train:
            raise DataError("There are no training examples; check the JSONL file and the split.")
        self.train, self.val = list(train), list(val)
        self.pad_token_id, self.seed = pad_token_id, seed
        self.accumulation, self.template = gradient_accumulation_steps, template

    def format_prompt(self, text: str) -> str:
        """How a generation prompt is shown to the model: inside the prompt template."""
        return format_prompt(self.template, text)

    def _epoch_order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.train))

    def train_batch(self, step: int, micro_step: int, batch_size: int) -> Batch:
        """The global batch for (optimizer ``step``, ``micro_step``): ``batch_size`` examples."""
        n = len(self.train)
        first = (step * self.accumulation + micro_step) * batch_size
        picked, orders = [], {}
        for pos in range(first, first + batch_size):
            epoch, i = divmod(pos, n)
            if epoch not in orders:
                orders[epoch] = self._epoch_order(epoch)
            picked.append(self.train[orders[epoch][i]])
        return collate(picked, self.pad_token_id)

    def val_batches(self, batch_size: int, max_batches: Optional[int] = None) -> Iterator[Batch]:
        """The validation examples in file order, ``batch_size`` per batch (the last may be short)."""
        for i, start in enumerate(range(0, len(self.val), batch_size)):
            if max_batches is not None and i >= max_batches:
                return
            yield collate(self.val[start:start + batch_size], self.pad_token_id)


def packaged_dataset(filename: str) -> Optional[Path]:
    """The path of a dataset shipped in ``ttexp/assets/`` (e.g. trickster.jsonl), or None."""
    path = Path(str(resources.files("ttexp") / "assets" / filename))
    return path if path.is_file() else None


def resolve_pairs_file(data_cfg: DataConfig) -> Path:
    """``data.path`` when set, else the packaged ``data.filename``, else the corpus search path.

    Raises:
        DataError: the file is found nowhere (from :func:`ttexp.data.corpus.resolve_corpus`).
    """
    if not data_cfg.path:
        shipped = packaged_dataset(data_cfg.filename)
        if shipped is not None:
            return shipped
    return resolve_corpus(data_cfg)


def held_out_prompts(data_cfg: DataConfig, seed: int, limit: int = 4) -> list[str]:
    """The prompts of the first ``limit`` held-out examples of ``data_cfg`` (``data.val_path``,
    else the seeded split :func:`load_pair_data` makes), in file order: validation samples and
    evaluation questions for a user's own data. Empty when the file cannot be read as JSONL (the
    validator then reports why, with line numbers)."""
    try:
        path = Path(data_cfg.val_path).expanduser() if data_cfg.val_path else resolve_pairs_file(data_cfg)
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        prompts = [row["prompt"] for row in rows]
    except (OSError, ValueError, KeyError, TypeError, TtexpError):
        return []
    if not all(isinstance(p, str) and p.strip() for p in prompts):
        return []
    picked = range(len(prompts)) if data_cfg.val_path else split_indices(
        len(prompts), data_cfg.val_fraction, seed)[1]
    return [prompts[i] for i in list(picked)[:limit]]


@dataclass
class PairDataInfo:
    """Facts about the loaded data, for the log and result.json."""

    path: str
    sha256: str
    val_path: Optional[str]
    train_examples: int
    val_examples: int
    truncated: int
    max_tokens: int

    def line(self) -> str:
        src = f"{self.path} + {self.val_path}" if self.val_path else f"{self.path} (seeded split)"
        return (f"Data: {src}: {self.train_examples} training and {self.val_examples} validation "
                f"examples, longest {self.max_tokens} tokens, {self.truncated} truncated")


def _checked_pairs(path: Path, tokenizer: Any, template: str, max_seq_len: int) -> list[tuple[str, str]]:
    """Run the validator on ``path`` and return its pairs; log its warnings.

    Raises:
        DataError: the validator found errors (the first ten are listed with line numbers).
    """
    report = validate_file(path, tokenizer, template, max_seq_len)
    if not report.ok:
        shown = "\n".join(f"  - {e}" for e in report.errors[:10])
        more = f"\n  ... and {len(report.errors) - 10} more" if len(report.errors) > 10 else ""
        raise DataError(f"The dataset {path} has {len(report.errors)} errors:\n{shown}{more}\n"
                        f"Fix them (python -m ttexp.validate_data {path}) and run again.")
    for w in report.warnings[:10]:
        log.warning("%s: %s", path.name, w)
    if len(report.warnings) > 10:
        log.warning("%s: ... and %d more warnings", path.name, len(report.warnings) - 10)
    return [(p, r) for _, p, r in report.pairs]


def load_pair_data(data_cfg: DataConfig, tokenizer: Any, max_seq_len: int, seed: int,
                   gradient_accumulation_steps: int) -> tuple[PairData, PairDataInfo]:
    """Validate, tokenise and split the JSONL data of ``data_cfg`` (``path``/``filename``,
    ``val_path``, ``val_fraction``, ``prompt_template``).

    Raises:
        DataError: a file is missing or invalid, or no training example is left.
    """
    template = data_cfg.prompt_template
    path = resolve_pairs_file(data_cfg)
    pairs = _checked_pairs(path, tokenizer, template, max_seq_len)
    encode = lambda ps: [encode_example(p, r, tokenizer, template, max_seq_len) for p, r in ps]  # noqa: E731
    val_path = data_cfg.val_path
    if val_path:
        vpath = Path(val_path).expanduser()
        if not vpath.is_file():
            raise DataError(f"data.val_path={val_path} does not exist; fix the path or set it to null.")
        train, val = encode(pairs), encode(_checked_pairs(vpath, tokenizer, template, max_seq_len))
    else:
        train_idx, val_idx = split_indices(len(pairs), data_cfg.val_fraction, seed)
        train, val = encode([pairs[i] for i in train_idx]), encode([pairs[i] for i in val_idx])
    data = PairData(train, val, tokenizer.pad_token_id, seed, gradient_accumulation_steps, template)
    every = train + val
    info = PairDataInfo(path=str(path), sha256=sha256_of(path), val_path=str(val_path) if val_path else None,
                        train_examples=len(train), val_examples=len(val),
                        truncated=sum(bool(e.truncated) for e in every),
                        max_tokens=max(len(e.ids) for e in every))
    return data, info
