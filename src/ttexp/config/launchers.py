"""``hydra/launcher=joblib`` resolves to ttexp's ``RecoveringJoblibLauncher``
(:mod:`ttexp.sweeps.joblib_launcher`), hydra-joblib-launcher's launcher made to survive a killed
worker process.

The plugin registers its config (``JobLibLauncherConf``) in Hydra's ConfigStore as
``hydra/launcher/joblib`` when Hydra scans its plugins. :func:`register_joblib_launcher` replaces
that entry, after the scan, with the same dataclass and ttexp's ``_target_``: every field, default
and type check of the plugin stays, and the option users already type selects ttexp's launcher.
(A ``conf/hydra/launcher/joblib.yaml`` would do it too, since the primary config directory comes
first in the search path, but Hydra then validates it against the plugin's entry of the same name
and prints its "automatic schema matching is deprecated" warning on every sweep.)
"""

from __future__ import annotations

from dataclasses import dataclass

from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins

TARGET = "hydra_plugins.ttexp_joblib_launcher.launcher.RecoveringJoblibLauncher"
"""ttexp's launcher class (Hydra instantiates launchers only from the ``hydra_plugins`` package)."""


def register_joblib_launcher() -> bool:
    """Point ``hydra/launcher=joblib`` at :data:`TARGET`; False (the plugin's own launcher stays)
    when hydra-joblib-launcher is not installed (``pip install 'ttexp[sweeps]'``) or ttexp's
    plugin package is missing (an editable install from before it existed: ``pip install -e .``)."""
    Plugins.instance()  # the plugin scan runs once, here if not before, and stores the plugin's entry
    try:
        from hydra_plugins.hydra_joblib_launcher.config import JobLibLauncherConf
        from hydra_plugins.ttexp_joblib_launcher import launcher
    except ImportError:
        return False
    if getattr(launcher, "RecoveringJoblibLauncher", None) is None:
        return False
    # Registered here as well as found by the scan: an editable install maps the package without
    # adding its folder to the hydra_plugins namespace that the scan walks.
    Plugins.instance().register(launcher.RecoveringJoblibLauncher)

    @dataclass
    class RecoveringJoblibLauncherConf(JobLibLauncherConf):
        _target_: str = TARGET

    ConfigStore.instance().store(group="hydra/launcher", name="joblib",
                                 node=RecoveringJoblibLauncherConf, provider="ttexp")
    return True
