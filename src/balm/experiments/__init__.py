"""The experiment runner: validated configs, the training loop, metrics, resumable sweeps.

- :mod:`balm.experiments.config`: :class:`~balm.experiments.config.Config`, ``load_config``.
- :mod:`balm.experiments.trainer`: ``train(config, out_dir)``, the training loop.
- :mod:`balm.experiments.prepare`: ``prepare_data``, the dataset-dependent config checks.
- :mod:`balm.experiments.model`: ``build_model``, ``load_checkpoint(path)``.
- :mod:`balm.experiments.metrics`: accuracy, weighted F1, per-class report, binary-from-regression.
- :mod:`balm.experiments.sweep`: ``load_sweep``, ``run_sweep`` (local pool or Ray).
- :mod:`balm.experiments.rundir`: a sweep folder's plan, results and ``summary.csv``.
"""
