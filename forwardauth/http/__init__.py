"""The HTTP layer: aiohttp handlers and the application built from them.

``authz`` (/auth), ``login`` (sign-in, renewal, logout), ``oauth``, ``browser_pages``, ``ops``
(health, metrics, keys) each add their routes in ``app``; ``common`` and ``cookies`` hold what
they share. HTTP builds on forwardauth.accounts, the stores and the core; nothing below imports
it (tests/test_layers.py checks the direction).
"""
