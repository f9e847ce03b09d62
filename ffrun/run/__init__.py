"""One run: its record (metrics.json), its directory and lock, resume, and the job from config to outputs."""
