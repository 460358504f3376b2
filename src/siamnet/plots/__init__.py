"""Figures, one job per module: training curves, pairs, ROC, embedding maps, episodes.

Every figure is written with matplotlib's Agg backend as a PNG, atomically.
"""
