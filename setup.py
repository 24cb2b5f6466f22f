"""Only the package list lives here (metadata: pyproject.toml): the Kubeflow layer's folders are
renamed on install (pipelines/ -> musictext_kfp, components/ -> musictext_kfp.components), which
pyproject's package finder cannot express."""

from setuptools import find_packages, setup

LIBRARY = find_packages("python", include=["musictext", "musictext.*"])
COMPONENTS = [f"musictext_kfp.{p}" for p in find_packages(".", include=["components", "components.*"])]

setup(packages=LIBRARY + ["musictext_kfp"] + COMPONENTS)
