"""Text generators (char-rnn): a SavedModel's `step`, continuous batching, and text requests."""
