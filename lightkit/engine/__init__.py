"""The engine: Trainer, its config, the compiled Engine, the loops and the run context."""
