"""The stores: PostgreSQL (users, sessions, clients, audit, migrations) and Redis (revocation,
sign-in regulation), each module one table's or one key family's queries.

Stores build on forwardauth.core and never on HTTP: a CLI command and a request handler use them
alike (tests/test_layers.py checks the direction).
"""
