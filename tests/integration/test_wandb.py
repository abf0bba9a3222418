"""logger=wandb: an offline run read back from its .wandb file (config, metric names, samples
table, summary, artifact); one W&B run per job of a sweep, grouped by the sweep; a W&B that cannot
start leaves a completed run with its local record."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import pytest

from conftest import run_cfg

pytestmark = pytest.mark.slow
wandb = pytest.importorskip("wandb")

METRICS = {"train/loss", "train/lr", "train/grad_norm", "train/tokens_per_s", "val/loss", "val/ppl"}


def read_offline_run(run_dir: Path, timeout_s: float = 60.0) -> list:
    """The records of the one offline W&B run under ``run_dir/wandb``, once its ``exit`` record is
    on disk: ``run.finish()`` returns before W&B's service process has flushed the file, and on a
    busy machine that takes a while."""
    deadline = time.monotonic() + timeout_s
    while True:
        records = _parse_offline_file(run_dir)
        if of_kind(records, "exit") or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def _parse_offline_file(run_dir: Path) -> list:
    (path,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    return parse_wandb_file(path)


def parse_wandb_file(path: Path) -> list:
    """reference/wandb_offline.md: a 7-byte W&B header, then LevelDB log records in 32 KiB blocks,
    each payload a protobuf ``Record`` (W&B's own schema, wandb.proto)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, pending, payloads = 7, 32768, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # block tail padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 1:
            payloads.append(chunk)
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            payloads.append(pending + chunk)
    records = []
    for payload in payloads:
        record = wandb_internal_pb2.Record()
        try:
            record.ParseFromString(payload)
        except Exception:  # noqa: BLE001 - the last record may still be half-written
            break
        records.append(record)
    return records


def of_kind(records: list, kind: str) -> list:
    return [r for r in records if r.WhichOneof("record_type") == kind]


def test_offline_run_holds_config_metrics_samples_and_model(tiny_cfg, tmp_path):
    cfg = tiny_cfg("logger=wandb", "logger.wandb.mode=offline", "logger.wandb.log_model=true",
                   "logger.wandb.tags=[baseline]")
    result = run_cfg(cfg, overrides=["logger=wandb", "training.learning_rate=0.0003"])
    assert result["status"] == "completed"
    assert result["wandb"]["mode"] == "offline" and result["wandb"]["url"] is None
    run_dir = Path(result["output_dir"])
    assert Path(result["wandb"]["dir"]).parent == run_dir / "wandb"

    records = read_offline_run(run_dir)
    assert of_kind(records, "exit"), "the W&B run was not finished"
    (start,) = of_kind(records, "run")
    assert start.run.job_type == "scratch"
    assert set(start.run.tags) == {cfg.model.name, cfg.hardware.name, "scratch", "baseline"}
    assert start.run.display_name == "test learning_rate=0.0003"  # logger=... is left out
    config = {item.key: json.loads(item.value_json) for item in start.run.config.update}
    assert {"model", "hardware", "training", "optimizer", "data", "logger"} <= set(config)
    assert config["training"]["max_steps"] == 4
    assert config["model"]["hidden_dim"] == cfg.model.hidden_dim

    history = [{(i.key or "/".join(i.nested_key)): i.value_json for i in r.history.item}
               for r in of_kind(records, "history")]
    logged = set().union(*history)
    assert METRICS <= logged and any(k.startswith("val/samples") for k in logged)
    steps = sorted({int(h["_step"]) for h in history})
    assert steps == [1, 2, 3, 4]
    summary = {}
    for r in of_kind(records, "summary"):
        summary.update({(i.key or "/".join(i.nested_key)): i.value_json for i in r.summary.update})
    assert json.loads(summary["best_val_loss"]) == pytest.approx(result["best_val_loss"], rel=1e-6)
    assert of_kind(records, "artifact"), "final_model/ was not logged as an artifact"
    # The local record is complete as well.
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert len([x for x in lines if "train/loss" in x]) == 4


def test_each_sweep_job_is_its_own_run_grouped_by_the_sweep(tmp_path, corpus):
    from test_sweeps import multirun

    out = tmp_path / "sweep"
    multirun(out, f"data.path={corpus}", "training.learning_rate=1e-4,3e-4", "logger=wandb",
             "logger.wandb.mode=offline")
    infos = [json.loads((out / str(n) / "result.json").read_text())["wandb"] for n in (0, 1)]
    assert infos[0]["id"] != infos[1]["id"]
    assert infos[0]["group"] == infos[1]["group"] == f"{out.parent.name}_{out.name}"
    assert infos[0]["name"].endswith("learning_rate=0.0001 #0")
    assert infos[1]["name"].endswith("learning_rate=0.0003 #1")
    for n in (0, 1):
        records = read_offline_run(out / str(n))
        assert of_kind(records, "exit"), "the W&B run was not finished"
        (start,) = of_kind(records, "run")
        assert start.run.run_group == infos[0]["group"]


def test_a_wandb_that_cannot_start_leaves_a_completed_local_run(tiny_cfg, monkeypatch, caplog):
    def refuse(**kwargs):
        raise wandb.errors.CommError("could not reach the server")

    monkeypatch.setattr(wandb, "init", refuse)
    result = run_cfg(tiny_cfg("logger=wandb"))
    assert result["status"] == "completed" and result["best_val_loss"] is not None
    assert "CommError: could not reach the server" in result["wandb"]["error"]
    assert "W&B could not start" in caplog.text and "local record only" in caplog.text
    assert (Path(result["output_dir"]) / "training_curves.png").is_file()


def summary_of(records: list) -> dict:
    """The W&B summary a file leaves: the last value of each key over its summary records."""
    out = {}
    for r in of_kind(records, "summary"):
        out.update({(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in r.summary.update})
    return out


def test_a_killed_run_resumed_continues_the_same_wandb_run(tmp_path, corpus, monkeypatch, capsys):
    """SIGKILL mid-run; summarize finds it lost and closes its W&B run as lost (status, last step
    and checkpoint in the summary, exit code 1), once; then resume=auto: every start writes to one
    W&B run (the id kept in the run directory), whose final summary reads completed; and
    WANDB_MODE=offline from the environment is honoured (no mode in the config)."""
    from ttexp.record.liveness import last_checkpoint, last_logged_step
    from ttexp.sweeps.summarize import main as summarize
    import os
    import signal
    import subprocess
    import sys

    from conftest import ROOT, run_in_process

    run_dir = tmp_path / "run"
    # W&B's start record reaches disk about 0.4 s (40-45 steps of debug=tiny) after training
    # begins: 400 steps leave a margin of seconds on a loaded machine
    max_steps = 400
    job = ["debug=tiny", f"data.path={corpus}", "logger=wandb", f"training.max_steps={max_steps}",
           "training.checkpoint_frequency=5", "training.validation_frequency=200", "sweep.journal=null"]
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_PROJECT": "from-env"}
    # its own W&B service, as a real job has: an earlier test's in this process is named by
    # WANDB_SERVICE, and a killed child's run would stay "in use" there
    env.pop("WANDB_SERVICE", None)
    proc = subprocess.Popen([sys.executable, "-m", "ttexp", *job, f"hydra.run.dir={run_dir}"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        def started() -> bool:  # a checkpoint, and the W&B run's start on disk (wandb-core buffers)
            files = list(run_dir.glob("wandb/offline-run-*/run-*.wandb"))
            return bool(list(run_dir.glob("checkpoints/step_*")) and files
                        and of_kind(parse_wandb_file(files[0]), "run"))

        while not started():
            assert proc.poll() is None and time.monotonic() < deadline, "the run ended before it was killed"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    run_id = (run_dir / "wandb/run_id.txt").read_text().strip()
    killed = set(run_dir.glob("wandb/offline-run-*/run-*.wandb"))
    step, ckpt = last_logged_step(run_dir), last_checkpoint(run_dir).name
    assert json.loads((run_dir / "result.json").read_text())["status"] == "running"
    assert summarize([str(run_dir), "--no-plot"]) == 1  # lost: exit 1, and its W&B run closed as lost
    assert "lost" in capsys.readouterr().out
    assert summarize([str(run_dir), "--no-plot"]) == 1  # once: no second W&B start
    (lost_file,) = set(run_dir.glob("wandb/offline-run-*/run-*.wandb")) - killed
    deadline = time.monotonic() + 60
    while not of_kind(lost := parse_wandb_file(lost_file), "exit") and time.monotonic() < deadline:
        time.sleep(0.2)
    (exit_record,) = of_kind(lost, "exit")
    assert exit_record.exit.exit_code == 1
    assert of_kind(lost, "run")[0].run.run_id == run_id
    said = summary_of(lost)
    assert said["status"] == "lost" and said["lost/last_step"] == step and step >= 5
    assert said["lost/last_checkpoint"] == ckpt and "is gone" in said["lost/reason"]
    mark = json.loads((run_dir / "wandb/lost.json").read_text())
    assert mark["id"] == run_id and mark["last_step"] == step and "error" not in mark

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_PROJECT", "from-env")
    result = run_in_process([*job, "resume=auto"], run_dir)
    assert result["status"] == "completed"
    assert result["wandb"]["id"] == run_id and result["wandb"]["mode"] == "offline"
    assert not (run_dir / "wandb/lost.json").exists()  # a later loss of this start is marked again
    files = set(run_dir.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(files) == 3  # one file per start, all for the same run: `wandb sync` merges them
    (resumed_file,) = files - killed - {lost_file}
    deadline = time.monotonic() + 60
    while not of_kind(parse_wandb_file(resumed_file), "exit") and time.monotonic() < deadline:
        time.sleep(0.2)
    starts = [of_kind(parse_wandb_file(f), "run")[0].run for f in files]
    assert {s.run_id for s in starts} == {run_id}
    assert {s.project for s in starts} == {"from-env"}
    resumed = parse_wandb_file(resumed_file)
    start = of_kind(resumed, "run")[0].run
    assert start.resumed or start.resume, start
    assert summary_of(resumed)["status"] == "completed"
    assert of_kind(resumed, "exit")[0].exit.exit_code == 0
    logged = [int(json.loads(i.value_json)) for r in of_kind(resumed, "history")
              for i in r.history.item if (i.key or "/".join(i.nested_key)) == "_step"]
    kinds = [r.WhichOneof("record_type") for r in resumed]
    assert logged and logged[0] > 5 and logged[-1] == max_steps, kinds  # continued from its checkpoint


def test_an_explicit_mode_wins_over_wandb_mode(tiny_cfg, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    result = run_cfg(tiny_cfg("logger=wandb", "logger.wandb.mode=disabled"))
    assert result["status"] == "completed" and result["wandb"]["mode"] == "disabled"
    assert not list(Path(result["output_dir"]).glob("wandb/offline-run-*"))
