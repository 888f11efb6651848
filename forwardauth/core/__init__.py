"""The pure core: tokens, the access decision, what a proxy forwarded, credentials, redirects.

No I/O and no server: nothing here imports aiohttp, psycopg2 or redis (tests/test_layers.py
checks it), so each module is tested without a server and reads on its own.
"""
