"""The demo: the 429 story of the blog post, replayed against a local strict upstream and fixed.

Run it with ``python -m resilience demo`` (see ``docs/demo.md``). Importing this package needs the
``aiohttp`` extra (``pip install 'resilience[demo]'``).
"""
