"""Image generators (GANs and VAEs): a SavedModel's signatures, the batcher, and the generation pipeline."""
