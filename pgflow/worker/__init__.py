"""The worker: a supervisor forking worker processes that claim and run queued workflows."""
