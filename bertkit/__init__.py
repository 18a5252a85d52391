"""bertkit: BERT end to end on PyTorch."""
