"""Entry point: ``python -m ttexp [group=option ...] [key=value ...]`` (Hydra 1.3).

    python -m ttexp model=nano task=scratch
    python -m ttexp hardware=n300 model=nano task=scratch
    python -m ttexp experiment=nano_cpu
    python -m ttexp --cfg job experiment=nano_cpu      # print the composed config, run nothing

Hydra runs here, in this controller process only: it composes the config, creates the run
directory and configures logging; :func:`ttexp.runner.run` does the rest and writes the record.
"""

from __future__ import annotations

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from ttexp.schema import register_configs

register_configs()

EXIT_CODES = {"completed": 0, "failed": 1, "diverged": 3, "interrupted": 130}


@hydra.main(version_base="1.3", config_path="pkg://ttexp.conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    """Run one job; in a single run, exit non-zero unless it completed."""
    from ttexp.runner import run

    hc = HydraConfig.get()
    result = run(cfg, overrides=list(hc.overrides.task))
    if hc.mode == RunMode.RUN and result["status"] != "completed":
        sys.exit(EXIT_CODES.get(result["status"], 1))
    best = result.get("best_val_loss")
    return float(best) if best is not None else float("nan")


if __name__ == "__main__":
    main()
