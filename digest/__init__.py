"""digest: a headless arXiv digest daemon."""
