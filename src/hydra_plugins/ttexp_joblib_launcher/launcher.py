"""``RecoveringJoblibLauncher``: hydra-joblib-launcher's ``JoblibLauncher`` (same options, loky
backend) whose sweep goes on when a worker process is killed; see :mod:`ttexp.sweeps.joblib_launcher`.

Hydra imports this module when it scans its plugins, so it imports nothing heavy, and nothing at
all without hydra-joblib-launcher (``pip install 'ttexp[sweeps]'``).
"""

from __future__ import annotations

from typing import Sequence

from hydra.core.utils import JobReturn

try:
    from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher
except ImportError:  # the plugin is not installed: no launcher here (ttexp.config.launchers)
    JoblibLauncher = None

if JoblibLauncher is not None:

    class RecoveringJoblibLauncher(JoblibLauncher):
        """``hydra/launcher=joblib`` in ttexp: replaces a broken process pool up to
        ``sweep.recoveries`` times, re-dispatching the unfinished jobs; the killed worker's job
        stays lost."""

        def launch(self, job_overrides: Sequence[Sequence[str]],
                   initial_job_idx: int) -> Sequence[JobReturn]:
            from ttexp.sweeps.joblib_launcher import launch

            return launch(self, job_overrides, initial_job_idx)
