"""The ``glioseg`` subcommands, one module per stage: each command's parser beside its handler.

Handlers parse paths and settings, call the stage's package functions and log
what they did; the stage logic itself lives in the package, where it is
tested without a command line. Heavy imports (torch, MONAI) happen inside the
handlers, so ``glioseg --help`` and the light stages start in a fraction of a
second.
"""
