"""The database and the owners of its tables, one module per table family: ``db`` (the connection and
every migration), ``papers`` (papers, announcements and fetches), ``ledger`` (digests and what each
covers), ``outbox`` (deliveries and the rendered formats they send), ``runs`` (what each run did),
``feedback`` (likes, dislikes, and the ids arXiv has no paper for) and ``summaries`` (the summaries and
the LLM calls). Other modules call them by name; nothing here imports a stage, the daemon or the CLI."""
