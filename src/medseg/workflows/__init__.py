"""The user-facing jobs, one public function each: train, evaluate, predict, demo.

This layer sits above report and below cli/web: it wires data, models, engine, inference, metrics and
report together. Every CLI subcommand is a thin wrapper over one function here.
"""
