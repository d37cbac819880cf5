"""Datasets: the engine functions behind the DVC stages in ``dvc.yaml``.

One module per dataset. Each exposes the function a Prefect task calls and a ``main()``
that the DVC stage runs (``python -m amas.datasets.<name>``), so both paths produce the
same bytes.
"""
