"""The project's exception tree; every message names the target, the step and the fix.

Every leaf is listed here, with the module that defines it (tests/unit/test_errors.py checks
that this drawing matches the classes in the tree):

CertdError
 +-- ConfigError              the config file is wrong (names file, key path and fix)
 +-- CertParseError           bytes that are not a usable X.509 certificate
 +-- ProbeError               a TLS endpoint could not be probed (carries an error class)
 +-- StoreError               the state database is unreachable or inconsistent
 |    +-- RecordError             a renewal's stored record has the wrong shape (renewers/pipeline/record.py)
 +-- DeviceError              an Expressway / Unified CM refused or failed an operation
 |    +-- OperationUnsupported    the box's API lacks a resource (renewers/expressway.py)
 |    +-- CertificateEkuRefused   the box refused a certificate for its EKU (renewers/expressway.py)
 |    +-- TrustedCasLost          a trust upload removed CAs; restored (renewers/expressway.py)
 |    +-- PendingCsrConflict      a CSR is already pending on the box (renewers/expressway.py)
 +-- CAError                  a CA connector failed (names the CA)
 |    +-- CARequestError          one request to a CA failed, with its reason (renewers/ca/base.py)
 +-- NotifyError              a notifier could not deliver (alerts/notify.py)
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
