"""fastnet's version: one place, read by pyproject.toml, the package and every run's metrics."""

VERSION = "0.1.0"
