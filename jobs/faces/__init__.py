"""Images into faces-table rows: listing, bounded reads, embedding on executors, chunked Delta commits.

Shared by the embed job and a query's probe archive (`query.probes.kind=archive`)."""
