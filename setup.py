"""ament_python package `vla_jepa_ros` (the repository root). The model package lives in training/."""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "vla_jepa_ros"
NODES = ["task_manager", "policy", "franka_controller", "recorder", "sim"]

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    package_data={PACKAGE: ["runtime/*.yaml"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.xml")),
        *[(f"share/{PACKAGE}/{d}", glob(f"{d}/*.*")) for d in sorted({p.rsplit("/", 1)[0] for p in glob("models/*/*.*")})],
    ],
    install_requires=["setuptools", "numpy", "pyyaml"],
    # `colcon test` runs pytest (not unittest) only when the package declares pytest as a test dependency; the
    # plugins are the ones pytest.ini's addopts need.
    extras_require={"test": ["pytest", "pytest-timeout", "pytest-rerunfailures"]},
    zip_safe=False,
    maintainer="vla_jepa_ros developers",
    description="VLA-JEPA policy, Franka controller, task manager and recorder for ROS 2.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            *[f"{n} = {PACKAGE}.nodes.{n}_node:main" for n in NODES],
            f"vla-jepa = {PACKAGE}.cli:main",
            f"vla-jepa-bringup = {PACKAGE}.bringup:main",
        ],
    },
)
