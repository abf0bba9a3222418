"""The dataset validator: exit codes, line numbers, warnings, statistics, JSON; no crash on bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ttexp.data.pairs import packaged_dataset
from ttexp.data.pair_check import validate_file
from ttexp.tools.validate_data import main

GOOD = '{"prompt": "What is a model?", "response": "A guess machine with settings."}'


def write(tmp_path, content: bytes | str, name="data.jsonl"):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def test_the_starter_dataset_passes_cleanly(capsys):
    path = packaged_dataset("trickster.jsonl")
    assert main([str(path)]) == 0
    out = capsys.readouterr().out
    assert "VALIDATION PASSED" in out and "Warnings" not in out
    report = validate_file(path)
    assert report.stats["examples"] >= 50 and not report.warnings


@pytest.mark.parametrize("bad_line,message", [
    (b'{"prompt": "a", "response": "b"', "not valid JSON"),
    (b'{"prompt": "caf\xe9", "response": "b"}', "not valid UTF-8"),
    (b'{"prompt": "a"}', "missing field 'response'"),
    (b'{"prompt": 42, "response": "b"}', "field 'prompt' must be a string, got int"),
    (b'{"prompt": "a", "response": ["b"]}', "field 'response' must be a string, got list"),
    (b'{"prompt": "a", "response": null}', "field 'response' must be a string, got NoneType"),
    (b'{"prompt": "   ", "response": "b"}', "field 'prompt' is empty"),
    (b'["a", "b"]', "expected a JSON object"),
])
def test_each_kind_of_bad_line_fails_with_its_line_number(tmp_path, capsys, bad_line, message):
    path = write(tmp_path, b"\n".join([GOOD.encode(), b"", bad_line, GOOD.encode()]) + b"\n")
    assert main([str(path)]) == 1
    out = capsys.readouterr().out
    assert f"line 3: {message}" in out and "VALIDATION FAILED with 1 errors" in out
    report = validate_file(path)
    assert [e.line for e in report.errors] == [3] and len(report.pairs) == 2


def test_missing_and_empty_files_are_errors_not_crashes(tmp_path, capsys):
    assert main([str(tmp_path / "absent.jsonl")]) == 1
    assert main([str(write(tmp_path, "\n\n"))]) == 1
    assert main([str(tmp_path)]) == 1  # a directory
    out = capsys.readouterr().out
    assert "cannot read" in out and "holds no examples" in out


def test_warnings_do_not_fail_validation(tmp_path):
    lines = [GOOD, GOOD,  # duplicate prompt and response
             json.dumps({"prompt": "Long?", "response": "word " * 200, "id": 3})]
    report = validate_file(write(tmp_path, "\n".join(lines)), max_tokens=64)
    text = [str(w) for w in report.warnings]
    assert report.ok
    assert any(w.startswith("line 2: duplicate prompt (also on line 1)") for w in text)
    assert any(w.startswith("line 2: duplicate response") for w in text)
    assert any(w.startswith("line 3: extra keys ignored: id") for w in text)
    assert any(w.startswith("line 3: response has 1000 characters") for w in text)
    assert any(w.startswith("line 3:") and "exceed the limit of 64" in w for w in text)


def test_low_diversity_of_first_words_is_a_warning(tmp_path):
    lines = [json.dumps({"prompt": f"q{i}?", "response": f"Imagine thing {i}."}) for i in range(10)]
    report = validate_file(write(tmp_path, "\n".join(lines)))
    assert report.ok and any("low diversity" in str(w) for w in report.warnings)
    assert report.stats["first_word_diversity"] == 0.1


def test_statistics_in_characters_and_tokens(tmp_path):
    lines = [json.dumps({"prompt": "ab", "response": "cdef"}), json.dumps({"prompt": "abcd", "response": "ef"})]
    s = validate_file(write(tmp_path, "\n".join(lines)), template="{prompt}").stats
    assert s["prompt_chars"] == {"min": 2, "max": 4, "mean": 3.0}
    assert s["response_chars"] == {"min": 2, "max": 4, "mean": 3.0}
    assert s["response_tokens"] == {"min": 3, "max": 5, "mean": 4.0}  # bytes + EOS
    assert s["total_tokens"]["max"] == 7


def test_json_report_from_the_command_line(tmp_path):
    path = write(tmp_path, GOOD + "\n{oops\n")
    proc = subprocess.run([sys.executable, "-m", "ttexp.validate_data", str(path), "--json"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    assert report["ok"] is False and report["errors"][0]["line"] == 2
    assert report["stats"]["examples"] == 1 and report["samples"][0]["line"] == 1


def test_token_counts_use_a_model_directorys_tokenizer(tiny_llama_dir, tmp_path, capsys):
    path = write(tmp_path, GOOD)
    by_bytes = validate_file(path).stats["total_tokens"]["max"]
    assert main([str(path), "--tokenizer", str(tiny_llama_dir), "--json"]) == 0
    by_bpe = json.loads(capsys.readouterr().out)["stats"]["total_tokens"]["max"]
    assert by_bpe < by_bytes
