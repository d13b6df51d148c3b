"""Suites (issue 15): one optimizer set tuned by one protocol over many workloads, scored as
AlgoPerf and DeepOBS score. ``scores`` (pure), ``results`` (the scores document from stored
runs), ``cases`` (the use cases the routes and the CLI call)."""
