"""Make ``experiments/*.yaml`` selectable as ``experiment=NAME``, next to ttexp's built-in presets.

The team keeps its own presets flat in the top-level ``experiments/`` folder (DESIGN.md, "Layout"),
but Hydra looks for the ``experiment`` group in an ``experiment/`` subfolder of each search-path
entry. This config source presents a folder of YAML files as that group and nothing else, and the
search-path plugin adds ``./experiments`` (or ``$TTEXP_EXPERIMENTS_DIR``) to every ttexp run.
Both are registered explicitly by :func:`ttexp.config.schema.register_configs` (Hydra's namespace-package
scan does not see packages of an editable install).
"""

from __future__ import annotations

import os
from typing import List, Optional

from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.object_type import ObjectType
from hydra.plugins.config_source import ConfigLoadError, ConfigResult, ConfigSource
from hydra.plugins.search_path_plugin import SearchPathPlugin
from omegaconf import OmegaConf

GROUP = "experiment"
SCHEME = "ttexp-experiments"


def experiments_dir() -> str:
    """``$TTEXP_EXPERIMENTS_DIR``, else ``experiments`` under the current directory (absolute)."""
    return os.path.abspath(os.environ.get("TTEXP_EXPERIMENTS_DIR") or "experiments")


class ExperimentsConfigSource(ConfigSource):
    """A folder of ``NAME.yaml`` files exposed as the config group ``experiment``."""

    @staticmethod
    def scheme() -> str:
        return SCHEME

    def _file(self, config_path: str) -> Optional[str]:
        """Map 'experiment/NAME(.yaml)' to the file in the folder; None for anything else."""
        group, _, name = config_path.partition("/")
        if group != GROUP or not name or "/" in name:
            return None
        return os.path.join(self.path, self._normalize_file_name(name))

    def load_config(self, config_path: str) -> ConfigResult:
        path = self._file(config_path)
        if path is None or not os.path.isfile(path):
            raise ConfigLoadError(f"Config not found: {config_path} in {self.path}")
        with open(path, encoding="utf-8") as f:
            header = ConfigSource._get_header_dict(f.read(512))
            f.seek(0)
            cfg = OmegaConf.load(f)
        return ConfigResult(config=cfg, path=f"{SCHEME}://{self.path}", provider=self.provider,
                            header=header)

    def available(self) -> bool:
        return os.path.isdir(self.path)

    def is_group(self, config_path: str) -> bool:
        return self.available() and config_path in ("", GROUP)

    def is_config(self, config_path: str) -> bool:
        path = self._file(config_path)
        return path is not None and os.path.isfile(path)

    def list(self, config_path: str, results_filter: Optional[ObjectType]) -> List[str]:
        if not self.available():
            return []
        if config_path == "":
            return [GROUP] if results_filter in (None, ObjectType.GROUP) else []
        if config_path != GROUP or results_filter == ObjectType.GROUP:
            return []
        names = sorted(f[:-5] for f in os.listdir(self.path) if f.endswith(".yaml"))
        return names


class TtexpExperimentsSearchPath(SearchPathPlugin):
    """Adds the experiments folder to the search path of ttexp's own app only."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        if any(e.path == "ttexp.conf" or e.path.endswith("ttexp.conf")
               for e in search_path.get_path()):
            search_path.append(provider="ttexp-experiments", path=f"{SCHEME}://{experiments_dir()}")
