"""L5 experiments: the assignment's and the bonus experiments as named presets, and sweeps.
Never imports report.

* :mod:`~fastnet.experiments.catalogue` -- the presets as data (settings, titles, quotes);
* :mod:`~fastnet.experiments.assignment` -- ``fastnet experiment NAME`` for Assignment 3;
* :mod:`~fastnet.experiments.bonus` -- the bonus experiments (Exercise 4);
* :mod:`~fastnet.experiments.sweep` -- many runs into run folders, resumable (``fastnet sweep``);
* :mod:`~fastnet.experiments.executor` -- where a sweep's tasks run: local worker processes
  or a Dask cluster, through one executor interface.
"""
