"""vit-digits training package: MNIST training, evaluation and experiments (``python -m training``)."""
