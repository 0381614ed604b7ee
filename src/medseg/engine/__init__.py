"""Training engine: one Trainer with callbacks; devices and mixed precision."""
