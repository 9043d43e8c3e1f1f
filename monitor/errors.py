"""The project's exception tree; every message names the target, the step and the fix.

CertdError
 +-- ConfigError          the config file is wrong (names file, key path and fix)
 +-- CertParseError       bytes that are not a usable X.509 certificate
 +-- ProbeError           a TLS endpoint could not be probed (carries an error class)
 +-- StoreError           the state database is unreachable or inconsistent
 +-- DeviceError          an Expressway / Unified CM refused or failed an operation
 +-- CAError              a CA connector failed (names the CA)
"""

from __future__ import annotations


class CertdError(Exception):
    """Root of every error this project raises on purpose."""


class ConfigError(CertdError):
    """A configuration file or value is invalid."""


class CertParseError(CertdError):
    """Input that should be an X.509 certificate is not one we can read."""


class ProbeError(CertdError):
    """A TLS probe failed; `error_class` is one of probe.ErrorClass values."""

    def __init__(self, message: str, error_class: str) -> None:
        super().__init__(message)
        self.error_class = error_class


class StoreError(CertdError):
    """The state store failed."""


class DeviceError(CertdError):
    """An Expressway or Unified CM operation failed."""


class CAError(CertdError):
    """A CA connector failed."""
