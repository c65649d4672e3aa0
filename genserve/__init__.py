"""Code shared by genserve's training side and its service: the model-store contract."""
