"""``python -m ttexp.doctor --selftest``: without ttml it says no device is present and exits 69;
with the strict ttml double injected (as the conformance suite injects it) it runs every step and
prints the table; a backend that drops its optimizer state on resume is reported as a failure."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import ttml_double as dbl  # noqa: E402

from ttexp.tools import doctor, selftest  # noqa: E402

ROWS = ["loss vs torch", "loss falls on device", "resume exactness", "cached vs uncached generation",
        "HF export logits"]


def test_without_ttml_it_says_no_device_is_present_and_exits_69(tmp_path):
    # The exit code and the console are what is tested, so a real process; ttml is made
    # unimportable even where it is installed (a None entry in sys.modules raises ImportError).
    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.modules['ttml'] = None\n")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    p = subprocess.run([sys.executable, "-m", "ttexp.doctor", "--selftest"], env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == selftest.EXIT_NO_DEVICE == 69, p.stdout + p.stderr
    assert p.stdout.startswith("No Tenstorrent device is present: ttml is not installed")
    assert "nothing was run" in p.stdout and "Traceback" not in p.stderr


@pytest.fixture
def double(monkeypatch):
    ttml, ttnn = dbl.make()
    monkeypatch.setitem(sys.modules, "ttml", ttml)
    monkeypatch.setitem(sys.modules, "ttnn", ttnn)


def _table(out: str) -> dict[str, tuple[str, str]]:
    rows = [line.strip("|").split(" | ") for line in out.splitlines() if line.startswith("| ")]
    return {r[0].strip(): (r[1].strip(), r[2].strip()) for r in rows[1:]}


def test_on_the_double_every_step_passes_and_the_table_names_the_backend(double, capsys):
    code = doctor.main(["--selftest"])
    out = capsys.readouterr().out
    assert code == 0, out
    table = _table(out)
    assert list(table) == ROWS and all(v == "PASS" for _, v in table.values()), out
    assert "- API generation: API generation B" in out and "Tenstorrent mesh [1, 1]" in out
    assert table["resume exactness"][0].endswith("max abs delta 0")
    assert dbl.state().opened == dbl.state().closed == 3  # probe, device, resumed device
    assert dbl.state().device_ids == [0]


def test_a_resume_that_loses_the_optimizer_state_fails_the_selftest(double, capsys, monkeypatch):
    from ttexp.backends.ttml.backend import TtmlBackend

    monkeypatch.setattr(TtmlBackend, "load_optimizer_state", lambda self, state: None)
    code = doctor.main(["--selftest"])
    out = capsys.readouterr().out
    assert code == selftest.EXIT_FAILED, out
    table = _table(out)
    assert table["resume exactness"][1] == "FAIL" and table["loss vs torch"][1] == "PASS"
    assert "1 check(s) failed." in out


def test_a_step_that_raises_is_named_and_the_rest_are_not_run(double, capsys, monkeypatch):
    monkeypatch.setattr(dbl.STATE, "fail_backward", True)
    code = doctor.main(["--selftest"])
    out = capsys.readouterr().out
    assert code == 1
    table = _table(out)
    assert table["loss vs torch"] == ("RuntimeError: double: backward failed", "FAIL")
    assert [v for _, v in list(table.values())[1:]] == ["not run"] * 4
    assert dbl.state().opened == dbl.state().closed


def test_a_kv_cache_that_shifts_the_logits_fails_the_generation_check(double, capsys, monkeypatch):
    real = dbl.KvCache.forward

    def shifted(self, *args):
        out = real(self, *args)
        out.value = out.value.roll(1, dims=-1)  # every token's logit moved to its neighbour
        return out

    monkeypatch.setattr(dbl.KvCache, "forward", shifted)
    assert doctor.main(["--selftest"]) == 1
    table = _table(capsys.readouterr().out)
    assert table["cached vs uncached generation"][1] == "FAIL" and table["resume exactness"][1] == "PASS"
