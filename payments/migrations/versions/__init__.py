"""Payment-core revisions: ``v0001_core_baseline`` and ``v0001_book_baseline`` are today's
tables; later revisions name their branch's previous one."""
