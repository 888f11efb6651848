"""For development and trying it out: embedded PostgreSQL and Redis, and the demo stack of
``make run``. The server uses them only when no store URL is configured."""
