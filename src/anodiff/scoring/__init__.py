"""From anomaly maps to decisions: thresholds and post-processing shared by all methods."""
