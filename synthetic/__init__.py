"""Synthetic pictures with known labels ("a red circle"): training data, quality checks and the demo."""
