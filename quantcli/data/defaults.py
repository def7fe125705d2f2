"""Defaults of the data layer, in a module with no imports so the CLI can show them cheaply."""

#: Default robust z-score beyond which a one-bar log return is reported as an outlier. Daily
#: index returns are fat-tailed: on the bundled sample the largest real moves (October 2008,
#: January 2001) reach |z| = 13.8, so the default sits above them and flags what is rare even
#: for fat tails (a mis-keyed price, a missing split adjustment).
DEFAULT_OUTLIER_Z: float = 15.0
