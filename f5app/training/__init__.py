"""The accelerate training loop and the pieces it is made of (schedule, RNG, lock, signals, saving)."""
