"""`rankalign train`: policy losses over ranked lists, and reward / preference models."""
