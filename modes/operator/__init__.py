"""The operator mode."""
