"""Character-level recurrent text generators (`kind="char-rnn"`): data, model, training, export, evaluation.

`python -m training.text train|evaluate ...` is the entry point; `train_text(config)` is the library call.
"""
