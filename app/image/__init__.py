"""Image generators (GANs and VAEs): a SavedModel's signatures, image files, uploads for VAEs and seed URLs."""
