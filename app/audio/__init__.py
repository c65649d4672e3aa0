"""Sound generators (SpecGAN): clips drawn from latents, served as WAV."""
