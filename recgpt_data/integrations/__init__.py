"""Optional integrations with orchestrators; each needs its own extra."""
