"""The payment core's Alembic environment (``env.py``) and revisions (``versions/``).

Two databases, one revision tree with two branches: ``core`` (the ledger, events, read
models, chain rails, ISO 20022 settlements: :data:`payments.db.metadata` and
:data:`payments.settlement.iso_metadata`) and ``book`` (the book rail's journal,
:data:`payments.book.book_metadata`, which may live in a database of its own). Each
database is upgraded to its own branch's head (``core@head``, ``book@head``) by
:func:`payments.db.migrate`; shipped in the package, so an installed wheel migrates.
"""
