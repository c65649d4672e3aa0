"""What a request gets for each field it leaves out, for every route and protocol, written once."""

from __future__ import annotations

# Images of a `POST /generate` that names neither `n` nor latents.
IMAGES = 16
# Clips of a sound generator's `POST /generate` that names neither `n` nor latents.
CLIPS = 1
# Sequences of a text `POST /generate` (and of each row of the inference protocols).
SEQUENCES = 1
# New characters per sequence, unless GENSERVE_MAX_NEW_TOKENS is lower.
MAX_NEW_TOKENS = 128
# Sampling temperature: 1 samples as the model learnt.
TEMPERATURE = 1.0
# Truncation psi: 1 draws from the whole latent distribution.
TRUNCATION = 1.0
# Frames of an interpolation, and their rate in a GIF or WebP.
STEPS = 16
FPS = 12
