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
from omegaconf import DictConfig

from ttexp.config.schema import register_configs

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
