"""Account operations: sign in, issue and rotate tokens, end sessions, change a user or a client.

Each is the one way to do it for the HTTP handlers and the command line alike: PostgreSQL and
Redis in the order that leaves nothing half done (see each module). Accounts build on the stores
and the core, never on HTTP (tests/test_layers.py checks the direction).
"""
