"""Synthetic datasets: deterministic generators behind the pipeline's ``generate`` stage.

``sample`` makes the people table (names, emails, phones, birth dates); ``generate`` builds on
it for cases, events and case notes and writes all four as Parquet. Output is a pure function
of the parameters, so ``dvc repro`` and the ``data-pipeline`` flow write the same bytes.
"""
