"""The version of dockyard (one place; setup.cfg reads the same number)."""

VERSION = "0.1.0"
