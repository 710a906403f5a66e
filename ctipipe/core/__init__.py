"""What every part shares: the stream format, arguments and exit statuses, paths and
expressions, terminal escaping, bounded standard error."""
