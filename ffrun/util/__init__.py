"""The ground floor: atomic writes, pictures, loggers, the error type, PSNR, the CPU allocator. Imports nothing of ffrun above it."""
