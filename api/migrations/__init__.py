"""The coordinator database's Alembic environment (``env.py``) and revisions (``versions/``).

Shipped inside the package so an installed wheel migrates its own database:
:func:`api.db.migrate` (run by the service at start, and by ``python -m api db upgrade``)
points Alembic at ``api:migrations``; no ``alembic.ini`` is needed.
"""
