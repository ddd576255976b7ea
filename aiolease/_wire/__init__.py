"""The DynamoDB wire format of the lease table, and the calls that carry it.

``schema``: the table's names (frozen). ``requests``: a pure function per request.
``rows``: pure parsing of the answers into the library's types. ``codes``: error codes to
the library's errors. ``calls``: the call engine (request slots, retries, send stamps).
Nothing here knows the lease rules; only ``calls`` does I/O.
"""
