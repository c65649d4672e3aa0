"""Generators that draw from latent vectors (image and sound generators alike): the batcher, the generation
pipeline, latent-space paths, provenance and the renderer their answers go through."""
