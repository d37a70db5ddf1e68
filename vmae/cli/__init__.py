"""The front door: `vmae-data` (data.py) and `vmae-train` (train.py), thin shells over library functions.

Library modules are imported inside the commands so that `--help` answers at once without loading torch or Ray.
"""
