"""Recommendation tools over a finished run: `topk` (the library) and `cli` (`ember recommend`).

Importing this package imports nothing heavy, so `ember --help` stays light; use
`from ember.recommend.topk import recommend`.
"""
