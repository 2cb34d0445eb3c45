"""The developer's side: install, connect, forward, status, disconnect, policy."""
