"""Plumbing every command shares: typed configs, models by name, the run directory, the run log, the memory preflight."""
