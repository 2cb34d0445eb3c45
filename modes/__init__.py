"""The four ways the one artifact runs: cli, agent, operator, sandbox; none imports another."""
