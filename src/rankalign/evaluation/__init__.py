"""`rankalign evaluate`: policies, samples, pairs, training logs, reward models; a report."""
