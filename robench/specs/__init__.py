"""What a run evaluates: threat models (registered and from TOML files), bounds on attack parameters, the run config,
suites."""
