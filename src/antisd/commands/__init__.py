"""One module per CLI command, each with a typed config and ``main(cfg)``."""
