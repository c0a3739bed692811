"""Turning a run into files (results JSON, per-sample JSONL) and console tables."""
