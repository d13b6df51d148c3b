"""The parts of ``services.export`` (import from there: ``export_series``, ``RUN_COLUMNS``).

- ``data``: a job loaded once for any format, the run columns, and the metric names and
  points shared by TensorBoard and MLflow;
- ``tables``: the CSV, JSON and parquet writers;
- ``tensorboard``, ``mlflow``: the two experiment-tracker exports (optional packages,
  imported only when asked for).
"""
