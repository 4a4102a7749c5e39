"""Pipeline specs (TOML) and the runner that executes their stages."""
