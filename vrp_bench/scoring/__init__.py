"""Scoring reliability signals against correctness: plain functions on arrays, composed into report sections.

``tally`` / ``stratified`` (every ranking and calibration statistic from per-value counts, within task),
``statistics`` (one function per statistic on plain arrays, ``UndefinedStatistic`` when there is no value),
``bootstrap`` (seeded, optionally stratified percentile CIs), ``calibration`` (debiased ECE),
``hypotheses`` (bootstrap tests, equivalence, Holm and Benjamini-Hochberg), ``signal_quality.score_signal``
(every statistic of one signal as a JSON-ready dict), ``crossval`` / ``probes`` / ``fusion`` (held-out
predictors) and ``heldout`` (their repeated-CV uncertainty and permutation test), ``records`` (reading
per-sample records), ``settings``, and the report sections: ``sections``, ``summary``, ``verdicts``.
Modules are imported where used (nothing here), so the command line starts without scikit-learn.
"""
