"""The VXLAN overlay driver (config, driver) and the agent's overlay manager (overlay)."""
