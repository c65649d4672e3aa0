"""genserve's training side: datasets, models, checkpoints and export to the model store."""
