"""nnunet-lean: Lean U-Net (constant width per level) and channel pruning for nnU-Net v2."""
__version__ = "0.1.0"
