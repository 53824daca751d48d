"""`kind: compare`: meta-learning and transfer entrants scored on the very same fixed test episodes.

`episodes` builds the episodes (and their digest and test classes) from a compare
recipe's `tasks`; `leakage` refuses an entrant that has seen a test class.
"""
