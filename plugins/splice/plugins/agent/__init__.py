"""The resident agent (server.py) and the stdlib-only thin client of the CNI executables (client.py)."""
