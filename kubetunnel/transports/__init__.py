"""Built-in transports. Each module is loaded through its entry point, never imported eagerly."""
