"""The filters and sinks of the pipeline (strip, include, pretty, split, stats) and the
runner they share."""
