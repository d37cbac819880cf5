"""GDPR erasure (Art. 17) and access/portability (Art. 15/20) requests across every AMAS store.

- ``identifiers``: what a subject identifier may be (external_ref, email, numeric id), checked
  before anything runs; errors never repeat the identifier.
- ``discovery``: everything held about a subject: store rows, task parameters and results that
  mention them, artifacts and their objects, DVC datasets and every dataset derived from them.
  A pure description (what, where, how many, why); identifiers stay out of its ``repr``.
- ``plan``: the pure decision per store: delete, anonymise (a named retention strategy),
  redact, rewrite, or keep with the reason (legal hold, legal obligation).
- ``erase``: the effects, one transaction per store step, each audited, re-checked against the
  store's current state so a failed request can simply be run again.
- ``erasure_list``: ``erasures/subjects.json``, the keyed digests the pipeline's ``generate``
  stage leaves out, and the filter it applies (a DVC dependency of that stage).
- ``datasets``: rewriting the affected datasets as new DVC versions, pushing them, and purging
  the superseded versions' objects from the DVC cache and remote.
- ``reapply``: the restore hook: erase again anyone the ledger lists whose data came back.
- ``certificate``, ``export``, ``requests``: evidence, the Art. 15/20 ZIP, and request tracking
  against the 30-day deadline.
"""
