"""Talking to arXiv, one module per concern; ``get_*`` functions do HTTP, ``parse_*`` functions turn
bytes into records (pure).

- :mod:`.ids`: arXiv identifiers.
- :mod:`.calendar`: which feed days carry an announcement, which submissions each announces, and "now".
- :mod:`.http`: the one polite session every request goes through.
- :mod:`.feed`: the daily Atom feed (rss.arxiv.org), the source of each day's digest.
- :mod:`.api`: the search API (export.arxiv.org/api): papers by id, and backfilling past days.
- :mod:`.days`: ``fetch_days``, the one call a run makes: the days it wants, from what is stored, the
  feed or the API.
- :mod:`.fulltext`: arXiv's HTML rendering of a paper, for full-text summaries.

Nothing is re-exported here, so importing one module (say, ids for `digest like`) does not import
lxml and requests.
"""
