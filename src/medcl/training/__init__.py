"""Training: the configuration, the components built from it, the trainer loop, its schedule,
validation and the run folder."""
