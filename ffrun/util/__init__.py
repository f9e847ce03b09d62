"""The ground floor: atomic writes, pictures, loggers, the error type, PSNR, the CPU allocator, the paths a user
types. Imports nothing of ffrun above it."""
