"""Version numbers of the on-disk formats, in a module with no heavy imports.

The Snakefile passes them to the rules that write those files as parameters,
so that a new format re-runs the rule (Snakemake's params trigger) instead of
leaving an old file for a newer reader to refuse.
"""

CACHE_FORMAT = 2
"""The preprocessed cache (:mod:`glioseg.cache`). Bump when its arrays or properties.json change meaning."""
