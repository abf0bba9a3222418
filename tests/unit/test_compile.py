"""training.compile: the three choices through Hydra, and when ``auto`` decides to compile."""

import pytest
from conftest import compose_cfg

from ttexp.backends.compile import (
    COST_S,
    GAIN,
    AutoCompile,
    CompileCosts,
    enable_compile_cache,
    worth_compiling,
)
from ttexp.config.validate import validate_config
from ttexp.config.values import compile_setting
from ttexp.errors import ConfigError


@pytest.mark.parametrize("override, expected", [
    ([], None),  # the default is auto
    (["training.compile=auto"], None),
    (["training.compile=true"], True),  # Hydra gives a bool here
    (["training.compile=false"], False),
    (["training.compile='true'"], True),  # a quoted string means the same
    (["training.compile=False"], False),
])
def test_compile_overrides_compose_to_the_three_choices(override, expected):
    cfg = compose_cfg(["debug=tiny"] + override)
    validate_config(cfg)
    assert compile_setting(cfg.training.compile) is expected


def test_a_compile_value_that_is_no_choice_is_refused_by_name():
    cfg = compose_cfg(["debug=tiny", "training.compile=sometimes"])
    with pytest.raises(ConfigError, match=r"training.compile=sometimes .*auto, true or false"):
        validate_config(cfg)


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def _run(auto, clock, step_s, steps):
    fired = []
    for i in range(steps):
        clock.now += 50.0 if i == 0 else step_s  # the first step is slow warm-up, not measured
        if auto.step_done():
            fired.append(i + 1)
    return fired


def test_auto_compiles_once_after_measuring_when_the_rest_of_the_run_repays_it():
    clock = FakeClock()
    auto = AutoCompile(planned_steps=1000, device_type="cpu", clock=clock, load=lambda: 1.0)
    assert _run(auto, clock, step_s=2.0, steps=20) == [4]  # after 1 warm-up + 3 timed steps
    assert auto.step_s == pytest.approx(2.0) and auto.decided is True


def test_auto_stays_eager_when_the_run_is_too_short():
    clock = FakeClock()
    # 96 remaining steps x 0.1 s x 12% = 1.2 s saved < 20 s of compiling
    auto = AutoCompile(planned_steps=100, device_type="cpu", clock=clock, load=lambda: 1.0)
    assert _run(auto, clock, step_s=0.1, steps=100) == []
    assert auto.decided is False and auto.step_s == pytest.approx(0.1)


def test_break_even_follows_the_measured_gain_and_cost():
    steps_to_repay = COST_S["cpu"] / (GAIN["cpu"] * 1.0)  # at 1 s/step
    assert not worth_compiling(1.0, int(steps_to_repay) - 1, "cpu")
    assert worth_compiling(1.0, int(steps_to_repay) + 1, "cpu")
    assert not worth_compiling(100.0, 10**6, "mps")  # unknown device types never compile
    # on a machine 5x loaded, the slower steps do not make a short run worth compiling
    assert worth_compiling(5.0, 100, "cpu") and not worth_compiling(5.0, 100, "cpu", load=5.0)


def test_a_loaded_machine_stretches_the_compile_cost():
    clock = FakeClock()
    auto = AutoCompile(planned_steps=300, device_type="cpu", clock=clock, load=lambda: 5.0)
    # 296 x 1 s x 12% = 36 s saved: worth 20 s on an idle machine, not 100 s on a loaded one
    assert _run(auto, clock, step_s=1.0, steps=10) == [] and auto.decided is False


def test_compile_cache_goes_under_the_user_cache_unless_the_user_chose(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "restored after the test")
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR")
    assert enable_compile_cache(tmp_path) == tmp_path / "inductor"
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    assert enable_compile_cache(tmp_path) == tmp_path / "mine"


def test_auto_measures_the_compile_cost_and_gain_and_the_next_run_weighs_them(tmp_path):
    costs = CompileCosts(tmp_path / "compile_costs.json")
    clock = FakeClock()
    first = AutoCompile(planned_steps=1000, device_type="cpu", clock=clock, load=lambda: 1.0,
                        costs=costs, key="shape A")
    assert _run(first, clock, step_s=1.0, steps=4) == [4] and first.cost_source == "expected"
    clock.now += 11.0  # the first compiled step: 10 s of compiling on top of a 1 s step
    first.step_done()
    assert first.measured_cost_s == pytest.approx(10.0)
    for _ in range(3):  # then three compiled steps of 0.7 s: 30% saved
        clock.now += 0.7
        first.step_done()
    assert first.measured_gain == pytest.approx(0.3)
    assert costs.get("shape A") == pytest.approx({"cost_s": 10.0, "gain": 0.3})
    # 66 steps x 1 s x 12% = 7.9 s saved: not worth COST_S (20 s); x 30% = 19.8 s > 10 s measured
    assert not worth_compiling(1.0, 66, "cpu")
    again = AutoCompile(planned_steps=70, device_type="cpu", clock=clock, load=lambda: 1.0,
                        costs=costs, key="shape A")
    assert _run(again, clock, step_s=1.0, steps=4) == [4]
    assert (again.cost_s, again.gain) == pytest.approx((10.0, 0.3))
    assert again.cost_source == "measured for this shape before"
    other = AutoCompile(planned_steps=70, device_type="cpu", clock=clock, load=lambda: 1.0,
                        costs=costs, key="shape B")
    assert _run(other, clock, step_s=1.0, steps=4) == [] and other.cost_s == COST_S["cpu"]


def test_a_shape_where_compiling_saved_nothing_is_never_compiled_again(tmp_path):
    costs = CompileCosts(tmp_path / "compile_costs.json")
    costs.put("tiny", cost_s=3.0, gain=-0.01)  # measured: compiled steps were no faster
    clock = FakeClock()
    auto = AutoCompile(planned_steps=10**6, device_type="cpu", clock=clock, load=lambda: 1.0,
                       costs=costs, key="tiny")
    assert _run(auto, clock, step_s=0.03, steps=10) == [] and auto.decided is False


def test_an_unreadable_cost_table_means_no_measurement(tmp_path):
    path = tmp_path / "compile_costs.json"
    path.write_text("{not json")
    costs = CompileCosts(path)
    assert costs.get("k") == {}
    costs.put("k", cost_s=3.5)  # replaces the damaged file rather than failing the run
    assert costs.get("k") == {"cost_s": 3.5}


def test_a_resumed_run_weighs_only_the_steps_it_has_left():
    clock = FakeClock()
    auto = AutoCompile(planned_steps=1000, device_type="cpu", clock=clock, load=lambda: 1.0)
    auto.expect_steps(100)  # resumed at step 900: 96 x 1 s x 15% = 14 s < 35 s
    assert _run(auto, clock, step_s=1.0, steps=10) == [] and auto.decided is False


def test_cost_key_names_the_shape_and_this_machines_cpu():
    from types import SimpleNamespace

    from ttexp.backends.compile import cost_key
    from ttexp.backends.detect import cpu_model

    config = SimpleNamespace(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                             num_key_value_heads=2, intermediate_size=64, vocab_size=256)
    key = cost_key(config, (4, 32), "fp32", True, False, "cpu")
    assert key.startswith("32x2 heads 4/2 mlp 64 vocab 256 batch 4x32 fp32 lora|")
    assert f"|cpu {cpu_model()}|" in key and cpu_model()
    assert key != cost_key(config, (4, 32), "bf16 autocast", True, False, "cpu")
