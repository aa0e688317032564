"""What the reading commands read: ``search`` (full-text and semantic search, one paper's details, the
digests as sent), ``vectors`` (the memory-mapped index semantic search reads), ``export``, ``status`` and
``health`` (what `digest status` and `digest stats` report) and ``views`` (their terminal tables). It reads
the tables through their owners in :mod:`digest.storage`; only the CLI imports it."""

# The formats `digest export` writes, declared once: export.WRITERS has one writer for each (a test ties
# them), and the CLI's --format offers these without importing export (and search) at every start.
EXPORT_FORMATS = ("bibtex", "ris", "csv", "json")
