"""Tuning studies: the trials a job's ``tuning`` block asks for (sampling.py), what happens
when a phase of the study ends (phases.py: the next round of trials, then the reruns of the
best settings and the one-shot baselines), and the protocol's numbers (protocol.py: the
selection score, the best trial, the rerun seeds).

A study is a job whose runs have roles (``Run.role``): its trials, each a sampled setting of
one optimizer entry trained on the job's seed, are stored and queryable like any run; when
every trial has finished, the best of each entry (on the validation split) is rerun on
``tuning.rerun_seeds`` fresh seeds, beside its one-shot baseline, and the job's summary ranks
the entries on those reruns. The sampler's state is never kept: the stored trials rebuild it.
"""
