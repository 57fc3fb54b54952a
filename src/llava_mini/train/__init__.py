"""Training: recipes (YAML) over small parts — arguments, freezing, checkpoints, the loop."""
