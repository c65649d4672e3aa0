"""genserve's HTTP service."""
