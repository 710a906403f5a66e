"""ctireport: a tagged stream drawn as one self-contained HTML page."""
