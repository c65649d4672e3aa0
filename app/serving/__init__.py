"""The serving core: which versions are loaded, loading and retiring them, and what a loaded version is."""
