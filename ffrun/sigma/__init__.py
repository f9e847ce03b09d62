"""Choosing sigma: NTK kernels and spectra, sigma=auto and the FreSh baseline. Each task hands over its own proxy."""
