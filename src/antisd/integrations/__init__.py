"""Adapters of antisd.core to training frameworks. Each imports its framework; the core imports none of them."""
