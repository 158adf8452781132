"""Packaging for fastcnn.

The raw Triton kernels live in the top-level ``kernels/`` folder of the repository but are
installed as ``fastcnn.kernels``: a top-level package named ``kernels`` would collide with
other distributions that use that name, so nothing here installs one.
"""
import re

from setuptools import setup

# The demo's data set (scikit-learn's bundled digits), progress bar and plot; the profiler's charts.
DEMO = ["scikit-learn", "matplotlib", "tqdm"]

setup(
    name="fastcnn",
    version=re.search(r'__version__ = "(.+)"', open("fastcnn/_version.py", encoding="utf-8").read()).group(1),
    description="Triton kernels for training convolutional networks in PyTorch",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=["fastcnn", "fastcnn.ops", "fastcnn.cases", "fastcnn.kernels"],
    package_dir={"fastcnn": "fastcnn", "fastcnn.kernels": "kernels"},
    install_requires=[
        "torch>=2.11",
        "triton>=3.6,<3.10",
        "numpy",
    ],
    extras_require={
        "demo": DEMO,
        "test": ["pytest>=7", "pytest-benchmark>=4", "pytest-xdist>=3", "expecttest", "setuptools>=64", "wheel"] + DEMO,
    },
    entry_points={"console_scripts": ["fastcnn-info=fastcnn.__main__:main",
                                      "fastcnn-profile=fastcnn.profile:_console"]},
)
