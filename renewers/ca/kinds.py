"""The CA kinds this release knows, in the order error messages list them. Each is declared
beside its connector (renewers/ca/<kind>_config.py); the composition root gives this registry
to the config loader (expressway_certd/config.py). Adding a kind touches only renewers/ca/:
its config module, its connector, this list and `build_connector`."""

from __future__ import annotations

from expressway_certd.monitor.config_ca import CAKind
from expressway_certd.renewers.ca.acme_config import ACME
from expressway_certd.renewers.ca.adcs_config import ADCS
from expressway_certd.renewers.ca.est_config import EST
from expressway_certd.renewers.ca.manual_config import MANUAL

CA_KINDS: tuple[CAKind, ...] = (ACME, EST, ADCS, MANUAL)
