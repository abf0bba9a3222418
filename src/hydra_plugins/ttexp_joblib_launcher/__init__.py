"""ttexp's Hydra launcher plugin: ``hydra/launcher=joblib`` that survives a killed worker process.

Hydra instantiates launchers only from the ``hydra_plugins`` package, so the class lives here and
its work in :mod:`ttexp.sweeps.joblib_launcher`; :mod:`ttexp.config.launchers` points
``hydra/launcher=joblib`` at it.
"""
