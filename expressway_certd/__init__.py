"""The composition root: the CLI and its verbs, the daemon wiring, the HTTP API, the demo.

The only package that may import every other one (docs/ARCHITECTURE.md, "Layers").
"""
