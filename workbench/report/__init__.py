"""`workbench report`: one self-contained HTML page of figures and tables from run directories.

It reads a run's files (metrics, history, recipe, evaluation), never its model,
except for the optional adaptation figure of sinusoid runs. Start at
`workbench.report.build.write_report`. This package's `__init__` imports
nothing, so that reading runs (`workbench.report.run_files`) stays free of
matplotlib.
"""
