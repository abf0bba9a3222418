"""Every config folder and asset ships in the wheel (pyproject's explicit package list)."""

from __future__ import annotations

import tomllib

from conftest import ROOT


def test_every_conf_folder_is_a_listed_package_with_its_yaml():
    py = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages, data = set(py["packages"]), py["package-data"]
    for folder in [p for p in (ROOT / "conf").rglob("*") if p.is_dir()]:
        name = "ttexp.conf." + ".".join(folder.relative_to(ROOT / "conf").parts)
        assert name in packages, f"{name} missing from [tool.setuptools] packages"
        if list(folder.glob("*.yaml")):
            assert data.get(name) == ["*.yaml"], f"{name} missing from package-data"


def test_every_source_package_is_listed():
    packages = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    for folder in [p for p in (ROOT / "src/ttexp").rglob("*") if p.is_dir() and p.name != "__pycache__"]:
        name = "ttexp." + ".".join(folder.relative_to(ROOT / "src/ttexp").parts)
        assert name in packages, f"{name} missing from [tool.setuptools] packages"
