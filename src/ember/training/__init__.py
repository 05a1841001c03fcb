"""Training: the loop, its session set-up, checkpoints, scale-out, callbacks and loggers."""
