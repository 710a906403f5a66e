"""cticheck: the CTI protocol's rules, checked message by message, version by version."""
