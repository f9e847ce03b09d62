"""Reading real data and sampling it; no training logic lives here."""
