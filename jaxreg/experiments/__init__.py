"""The experiments `jaxreg run NAME` runs: one module per question, each with `get_config()` and `run()`.

They ship inside the package (so a wheel install has them) and are imported as
`jaxreg.experiments.NAME`; the command line never executes experiment files from the current
directory or another package's folder. A file of your own runs only when you name its path:
`jaxreg run path/to/my_experiment.py`.
"""
