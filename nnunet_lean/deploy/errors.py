"""Errors of the deployment path."""
from nnunet_lean.errors import LeanError

INSTALL_HINT = 'pip install "nnunet-lean[deploy]"'


class DeployError(LeanError):
    """An export or export folder that cannot be used as asked; the message names the fix."""
