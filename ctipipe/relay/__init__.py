"""ctirelay: the producer. A transparent proxy between a CTI client and server
(listener, sessions, pumps, TLS interception, certificates) and the tap that turns
what passed into the tagged stream (splitter)."""
