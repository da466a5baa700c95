"""The SQLite implementation of the Storage protocol: the connection (connection.py) with
each domain's part. The only module set that touches the database file.

The schema is a public contract documented in docs/schema.md. Downstream tools read the
`items`, `feed_health` and `story_outlets` views while the daemon writes: the database runs in
WAL mode, so readers never block the writer and the writer never blocks readers.

Writes happen on one thread (the pipeline's writer); each feed's results are one short
transaction. Migrations are ordered and applied automatically at open.
"""

from __future__ import annotations

from .articles import ArticlesMixin
from .documents import DocumentsMixin
from .entries import EntriesMixin
from .feeds import FeedsMixin
from .reads import ReadsMixin
from .retention import RetentionMixin


class SQLiteStorage(FeedsMixin, EntriesMixin, ArticlesMixin, ReadsMixin, RetentionMixin,
                    DocumentsMixin):
    """All reads and writes of one SQLite database. Not shared across threads: open one per
    thread (readers) and use one for the writer."""

    parallel_writers = 1  # SQLite takes one writer at a time


# The name callers have always used.
Store = SQLiteStorage
