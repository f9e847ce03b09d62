"""Training: the one loop (single runs and vectorized sweep members) and what a checkpoint holds."""
