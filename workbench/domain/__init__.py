"""Domain adaptation: the reversal-weight and learning-rate schedules of DANN, and the proxy A-distance between domains."""
