"""A whole scratch run with backend=ttml and backend=auto, through the strict double put in place
of the ttml module: detection, planning, the factory, the loop and the record, end to end."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import ttml_double as dbl  # noqa: E402

from ttexp.train.plan import choose_backend  # noqa: E402
from conftest import run_cfg  # noqa: E402


def install(monkeypatch):
    ttml, ttnn = dbl.make()
    monkeypatch.setitem(sys.modules, "ttml", ttml)
    monkeypatch.setitem(sys.modules, "ttnn", ttnn)


def test_auto_picks_ttml_when_a_device_opens_and_says_why_not(monkeypatch):
    monkeypatch.setitem(sys.modules, "ttml", None)
    backend, why = choose_backend("auto", [1, 1])
    assert backend == "torch" and "ttml is not installed" in why
    install(monkeypatch)
    backend, why = choose_backend("auto", [1, 2])
    assert backend == "ttml" and "a device opened for mesh [1, 2]" in why
    assert dbl.state().opened == dbl.state().closed == 1
    monkeypatch.setattr(dbl.AutoContext, "open_device", lambda self, *a: (_ for _ in ()).throw(RuntimeError("busy")))
    backend, why = choose_backend("auto", [1, 1])
    assert backend == "torch" and "no device opened" in why and "busy" in why


def test_scratch_run_on_the_double_completes_and_closes_the_device(monkeypatch, tiny_cfg):
    install(monkeypatch)
    cfg = tiny_cfg("backend=ttml")
    result = run_cfg(cfg)
    assert result["status"] == "completed", result.get("error")
    assert result["backend"] == "ttml" and "Tenstorrent mesh [1, 1]" in result["device"]
    st = dbl.state()
    assert st.closed == 1 and not st.device_open and st.steps == 4
    final = Path(cfg.output_dir) / "final_model"
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(str(final))
    assert json.loads((final / "config.json").read_text())["num_hidden_layers"] == 2


def test_failed_run_still_closes_the_device(monkeypatch, tiny_cfg):
    install(monkeypatch)
    dbl.state().fail_backward = True
    result = run_cfg(tiny_cfg("backend=ttml"))
    assert result["status"] == "failed" and "backward failed" in result["error"]
    assert dbl.state().closed == 1 and not dbl.state().device_open
