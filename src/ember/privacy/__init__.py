"""Differential privacy: DP-SGD training (`train.privacy`, through Opacus) and `ember audit`.

Light to import (no torch): `config` is read by the training config; `engine` (the loop's
DP-SGD hook), `accounting`, `audit` and `report` import torch and Opacus when used.
"""
