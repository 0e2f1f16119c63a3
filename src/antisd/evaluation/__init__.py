"""Measuring models: held-out avg@k / pass@k, named evaluation sets, sampling and scoring, the PMI report, comparison statistics."""
