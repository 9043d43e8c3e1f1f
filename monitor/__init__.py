"""expressway-certd's monitoring core: config, cert facts, probing, checks, events, store, state.

`__version__` is written here rather than read from the installed metadata (importlib.metadata
costs a tenth of a second at every CLI start); tests/unit/test_cli_imports.py checks that it
equals pyproject.toml's version.
"""

__version__ = "0.1.0"
