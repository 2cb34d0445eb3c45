"""The sandbox mode."""
