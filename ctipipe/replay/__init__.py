"""ctireplay: a recorded session played back as a live server (a mock) or as live clients."""
