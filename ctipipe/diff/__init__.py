"""ctidiff: two sessions compared by meaning (read, align, compare, pair, show)."""
