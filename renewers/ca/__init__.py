"""CA connectors (ACME, EST, Microsoft AD CS) behind one interface (see base.py)."""
