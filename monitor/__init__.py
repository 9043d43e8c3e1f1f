"""expressway-certd: the monitoring core (config, cert facts, probing, state, daemon, CLI)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("expressway-certd")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"
