"""ctipipe: spy on, save and measure a XiVO CTI session as a Unix pipeline."""

__version__ = "0.3.0"
