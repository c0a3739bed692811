"""Scoring reliability signals: statistics with bootstrap CIs, hidden-state probes, signal fusion.

``statistics`` (one function per statistic, ``UndefinedStatistic`` when there is no value),
``bootstrap`` (seeded percentile CIs, vectorised over resamples), ``signal_quality.score_signal``
(every statistic of one signal as a JSON-ready dict), ``probes`` (cross-validated hidden-state probes
with nested layer selection), ``fusion`` (out-of-fold logistic regression over signals).
"""

from vrp_bench.scoring.fusion import fuse_signals
from vrp_bench.scoring.probes import load_probes, run_probes, save_probes
from vrp_bench.scoring.signal_quality import score_signal
from vrp_bench.scoring.statistics import UndefinedStatistic

__all__ = ["UndefinedStatistic", "fuse_signals", "load_probes", "run_probes", "save_probes", "score_signal"]
