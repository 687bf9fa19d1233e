"""nnunet-lean. Our trainers/ and plans/ folders are installed INSIDE nnunetv2's package tree
(via package_dir) because that is where the stock nnU-Net commands look for trainers and planners;
pip records these files, so `pip uninstall nnunet-lean` removes them again."""
from pathlib import Path

from setuptools import find_packages, setup

TRAINERS_PKG = "nnunetv2.training.nnUNetTrainer.variants.lean"
PLANNERS_PKG = "nnunetv2.experiment_planning.experiment_planners.lean"


def requirements(name: str) -> list:
    """Requirement lines of requirements/NAME (comments dropped): one list for pip -r and the extra."""
    lines = (Path(__file__).parent / "requirements" / name).read_text().splitlines()
    return [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]

setup(
    name="nnunet-lean",
    version="0.1.0",
    description="Lean U-Net (constant width per level) and STAMP channel pruning for nnU-Net v2",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["nnunet_lean", "nnunet_lean.*"]) + [TRAINERS_PKG, PLANNERS_PKG],
    package_dir={TRAINERS_PKG: "trainers", PLANNERS_PKG: "plans"},
    install_requires=[
        "nnunetv2>=2.8.1,<2.9",
        "torch>=2.1",
        "dynamic-network-architectures>=0.4.1",
        "SimpleITK>=2.2",
        "batchgenerators>=0.25",
        "numpy",
        "scipy",
        "matplotlib",
    ],
    extras_require={"mni": ["nilearn>=0.10"],  # the MNI152 template files it ships (make-dataset --kind mni)
                    "deploy": requirements("deploy.txt")},  # nnunet_lean export / predict backends
    entry_points={"console_scripts": ["nnunet_lean=nnunet_lean.cli:main"]},
)
