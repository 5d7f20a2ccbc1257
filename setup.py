"""Which packages the wheel carries; everything else about the package is in pyproject.toml.

The YAML config tree stays at the repository's top (``conf/``) and is mapped into the package as
``f5app/_conf`` (each of its folders a data-only package; the YAML files are package data in
pyproject.toml), so an installed wheel finds its configs beside its code
(``f5app.config.CONF_DIR``). pyproject.toml alone cannot add a mapped package to the automatic
package search, hence this file.
"""

from setuptools import find_namespace_packages, setup

CONF_PACKAGES = ["f5app._conf"] + [f"f5app._conf.{name}" for name in find_namespace_packages(where="conf")]

setup(
    packages=find_namespace_packages(include=["f5app", "f5app.*"]) + CONF_PACKAGES,
    package_dir={"f5app._conf": "conf"},
)
