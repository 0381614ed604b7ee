"""Inference: ``Predictor.from_run(run_dir)`` and friends."""
