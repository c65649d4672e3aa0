"""Audio data for generative models: spoken digits rendered offline with espeak-ng, and a user's WAV folders."""
