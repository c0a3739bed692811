"""The leaderboard: submitted runs under ``leaderboard/submissions/`` -> a ranked board (``LEADERBOARD.md`` and a
static site), built from the saved files alone, never from a model.

``submission`` (checking and placing a run: ``vrp-bench leaderboard submit``), ``verification`` (re-running part of
one: ``verify``), and the build (``vrp-bench leaderboard build``): ``submissions`` (reading the board's runs),
``ranking`` (what is ranked, rank intervals and bands), ``figures`` (SVG charts), ``markdown``, ``site``, ``build``.
Modules are imported where used (nothing here), so a command loads only what it needs.
"""
