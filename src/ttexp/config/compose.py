"""Compose the run config without running Hydra's app: the one helper that tests and tools share.

    from ttexp.config.compose import compose_config
    cfg = compose_config(["debug=tiny", "training.max_steps=2"])

The result is what ``python -m ttexp OVERRIDES --cfg job`` prints: the same schema, defaults list
and groups. No run directory is made and ``name``/``output_dir`` stay unresolved interpolations of
``hydra:`` values (set them before running or resolving); with ``return_hydra_config=True`` the
``hydra`` node is included, as the launcher and sweeper plugins see it.
"""

from __future__ import annotations

from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from ttexp.config.convert import to_run_config
from ttexp.config.schema import RunConfig, register_configs

CONFIG_MODULE = "ttexp.conf"
CONFIG_NAME = "config"


def compose_config(overrides: list[str], *, return_hydra_config: bool = False) -> DictConfig:
    """Compose ``config`` from ``ttexp.conf`` with ``overrides``, as the command line would.

    Registers the schema first (:func:`ttexp.config.schema.register_configs`). Hydra's global state
    is left as it was found: it works at top level and inside a running Hydra app alike.

    Args:
        overrides: command-line style overrides, e.g. ``["model=nano", "training.max_steps=10"]``.
        return_hydra_config: keep the ``hydra`` node in the result.

    Returns:
        The composed config, typed by the schema (no cross-field validation: see
        :func:`ttexp.config.validate.validate_config`).

    Raises:
        hydra.errors.MissingConfigException: an unknown group option (``model=nope``).
        hydra.errors.ConfigCompositionException: an unknown key, or a value of the wrong type or
            outside an enum (``training.lr=1``, ``training.batch_size=abc``, ``backend=cuda``).
        hydra.errors.OverrideParseException: an override that does not parse (``a=[``).
    """
    register_configs()
    outer = GlobalHydra.instance().hydra  # set when called inside a running Hydra app
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
            return compose(config_name=CONFIG_NAME, overrides=list(overrides),
                           return_hydra_config=return_hydra_config)
    finally:  # initialize_config_module put back a (deep) copy of the cleared instance
        GlobalHydra.instance().hydra = outer


def compose_run_config(overrides: list[str], output_dir: str = "unused") -> RunConfig:
    """The typed run config for ``overrides`` as a run outside Hydra's app sees it: ``name``
    resolved as Hydra would resolve it (``${hydra:runtime.choices...}``), ``output_dir`` set to
    ``output_dir``, converted to the schema's dataclasses. For tools (doctor, bench) and tests.

    Raises:
        the errors of :func:`compose_config`.
    """
    cfg = compose_config(list(overrides), return_hydra_config=True)
    hydra_config = HydraConfig.instance()
    outer = hydra_config.cfg
    try:
        hydra_config.set_config(cfg)  # the hydra: resolver reads runtime.choices from here
        name = str(cfg.name)
    finally:
        hydra_config.cfg = outer
    with open_dict(cfg):
        cfg.name, cfg.output_dir = name, str(output_dir)
        del cfg["hydra"]
    return to_run_config(cfg)
