"""Built-in stores. Each module is loaded through its entry point, never imported eagerly."""
