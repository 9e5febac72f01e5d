"""The demo use case: synthetic support tickets from a SQLite database and a REST API."""
