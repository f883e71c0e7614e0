"""Demo data, scenarios and training for `influence demo`, the app's demos and the benchmarks.

Nothing in the library imports this package; it is the code a user would write around it.
"""
