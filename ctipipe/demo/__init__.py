"""ctidemo: a CTI server and client that behave like XiVO's, to see the tools at work."""
