"""The agent mode."""
