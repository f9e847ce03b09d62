"""ffrun's Hydra launcher plugin: `hydra/launcher=vectorized` (see ffrun.train.vectorized)."""
