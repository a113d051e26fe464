"""`rankalign score`: rewards for every response (models, judges, rules), weighted and summed."""
