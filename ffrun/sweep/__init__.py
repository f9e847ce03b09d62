"""What ffrun-reproduce and ffrun-compare share: plans, running the runs, tables and galleries."""
