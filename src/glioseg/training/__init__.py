"""Training one experiment on one fold: data, optimisation, checkpoints, resume."""
