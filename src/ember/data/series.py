"""Sequences of numbers: real series for forecasting and the classic synthetic memory tasks.

Forecasting splits are chronological (train, then val, then test) and normalised with the
training part's statistics; only the training windows are shuffled, by the loop.
"""

from __future__ import annotations

import csv

import numpy as np
import torch

from ember.data.bundle import ArrayDataset, DataBundle, DataInfo
from ember.data.text_config import AddingConfig, CopyConfig, CsvSeriesConfig, SeriesConfig
from ember.errors import DataError, did_you_mean

__all__ = ["load_series", "load_csv_series", "load_adding", "load_copy", "series_values", "windows"]


# Where each statsmodels series starts and how often it is sampled (recorded in the run).
SERIES_FACTS = {
    "sunspots": {"start": "1700", "frequency": "yearly", "unit": "Wolf sunspot number",
                 "season": 11},
    "co2": {"start": "1958-03", "frequency": "monthly", "unit": "ppm CO2, Mauna Loa", "season": 12},
}


def series_values(name: str) -> np.ndarray:
    """The raw series shipped inside statsmodels (no download).

    sunspots: yearly sunspot activity 1700-2008. co2: Mauna Loa weekly CO2 1958-2001, gaps
    linearly interpolated, then averaged per calendar month.
    """
    try:
        from statsmodels import datasets
    except ImportError:
        raise DataError(f"data.name: '{name}' needs statsmodels: pip install 'ember[series]'") from None
    if name == "sunspots":
        return datasets.sunspots.load_pandas().data["SUNACTIVITY"].to_numpy(dtype=np.float64)
    frame = datasets.co2.load_pandas().data  # weekly, with gaps
    monthly = frame["co2"].interpolate().resample("MS").mean()
    return monthly.to_numpy(dtype=np.float64)


def windows(values: np.ndarray, window: int, horizon: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every (window -> horizon) pair: inputs (N, window, 1), targets (N, horizon)."""
    n = len(values) - window - horizon + 1
    if n <= 0:
        return torch.zeros(0, window, 1), torch.zeros(0, horizon)
    idx = np.arange(window)[None, :] + np.arange(n)[:, None]
    x = values[idx][..., None]
    y = values[np.arange(horizon)[None, :] + np.arange(n)[:, None] + window]
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)


def _forecast_bundle(values: np.ndarray, cfg: SeriesConfig | CsvSeriesConfig, name: str,
                     facts: dict | None = None) -> DataBundle:
    n = len(values)
    n_test = int(n * cfg.test_fraction)
    n_val = int(n * cfg.val_fraction)
    n_train = n - n_val - n_test
    if n_train < cfg.window + cfg.horizon:
        raise DataError(f"{name}: {n} points are too few for window {cfg.window} + horizon {cfg.horizon}")
    for split, points, fraction in (("val", n_val, cfg.val_fraction), ("test", n_test, cfg.test_fraction)):
        if fraction > 0 and points < cfg.horizon:
            raise DataError(f"{name}: the {split} part ({points} points) is shorter than horizon "
                            f"{cfg.horizon}; raise data.{split}_fraction or lower data.horizon")
    mean, std = float(values[:n_train].mean()), float(values[:n_train].std() or 1.0)
    z = (values - mean) / std
    # Val and test windows may look back into the previous part, but their targets lie
    # entirely inside their own part.
    parts = {
        "train": z[:n_train],
        "val": z[max(n_train - cfg.window, 0): n_train + n_val],
        "test": z[max(n_train + n_val - cfg.window, 0):],
    }
    data = {s: windows(v, cfg.window, cfg.horizon) for s, v in parts.items()}
    x, y = data["train"]
    if cfg.limit is not None:
        x, y = x[: cfg.limit], y[: cfg.limit]
    info = DataInfo(
        task="forecast", input_kind="series", input_shape=(cfg.window, 1), num_outputs=cfg.horizon,
        mean=(mean,), std=(std,),
        extra={"source": name, "series": cfg.name if isinstance(cfg, SeriesConfig) else cfg.column,
               **(facts or {}), "points": n, "horizon": cfg.horizon, "window": cfg.window,
               "split_points": {"train": n_train, "val": n_val, "test": n_test},
               "targets": [f"t+{i + 1}" for i in range(cfg.horizon)]},
    )
    return DataBundle(ArrayDataset(x, y), ArrayDataset(*data["val"]), ArrayDataset(*data["test"]), info)


def load_series(cfg: SeriesConfig, seed: int) -> DataBundle:
    """sunspots or co2: chronological split, train-normalised windows."""
    return _forecast_bundle(series_values(cfg.name), cfg, f"statsmodels {cfg.name}", SERIES_FACTS[cfg.name])


def load_csv_series(cfg: CsvSeriesConfig, seed: int) -> DataBundle:
    """One numeric column of the user's CSV, rows in time order."""
    if not cfg.path.is_file():
        raise DataError(f"CSV file '{cfg.path}' does not exist")
    with open(cfg.path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        if cfg.column not in header:
            raise DataError(f"'{cfg.path}': no column '{cfg.column}'; {did_you_mean(cfg.column, header)}")
        values = []
        for i, row in enumerate(reader):
            try:
                values.append(float(row[cfg.column]))
                if not np.isfinite(values[-1]):
                    raise ValueError
            except (TypeError, ValueError):
                raise DataError(f"'{cfg.path}' row {i + 2}: {row[cfg.column]!r} in column '{cfg.column}' "
                                "is not a finite number") from None
    return _forecast_bundle(np.asarray(values), cfg, f"csv {cfg.path}")


def _split_synthetic(x: torch.Tensor, y: torch.Tensor, cfg: AddingConfig | CopyConfig) -> tuple[ArrayDataset, ...]:
    n = len(x)
    n_test, n_val = int(n * cfg.test_fraction), int(n * cfg.val_fraction)
    n_train = n - n_val - n_test
    tr = slice(0, min(n_train, cfg.limit) if cfg.limit else n_train)
    return (ArrayDataset(x[tr], y[tr]), ArrayDataset(x[n_train:n_train + n_val], y[n_train:n_train + n_val]),
            ArrayDataset(x[n_train + n_val:], y[n_train + n_val:]))


def load_adding(cfg: AddingConfig, seed: int) -> DataBundle:
    """Inputs (N, T, 2): a value in [0, 1) and a marker; two markers per row; target their sum."""
    gen = torch.Generator().manual_seed(seed)
    n, t = cfg.n_samples, cfg.length
    values = torch.rand(n, t, generator=gen)
    first = torch.randint(0, t // 2, (n,), generator=gen)
    second = torch.randint(t // 2, t, (n,), generator=gen)
    marks = torch.zeros(n, t)
    marks[torch.arange(n), first] = 1.0
    marks[torch.arange(n), second] = 1.0
    x = torch.stack([values, marks], dim=-1)  # (N, T, 2)
    y = (values * marks).sum(1, keepdim=True)  # (N, 1)
    info = DataInfo(task="regression", input_kind="series", input_shape=(t, 2), num_outputs=1,
                    extra={"source": "adding problem", "targets": ["sum"], "baseline_mse": 1 / 6})
    return DataBundle(*_split_synthetic(x, y, cfg), info)


def load_copy(cfg: CopyConfig, seed: int) -> DataBundle:
    """Tokens: S symbols, `delay` blanks, a delimiter, S blanks; the last S targets are the symbols.

    Ids: 0..n_symbols-1 symbols, n_symbols blank, n_symbols+1 delimiter. Targets are -100
    (not scored) everywhere except the final S positions.
    """
    gen = torch.Generator().manual_seed(seed)
    s, d, k = cfg.copy_length, cfg.delay, cfg.n_symbols
    blank, delim = k, k + 1
    n = cfg.n_samples
    symbols = torch.randint(0, k, (n, s), generator=gen)
    total = s + d + 1 + s
    x = torch.full((n, total), blank, dtype=torch.long)
    x[:, :s] = symbols
    x[:, s + d] = delim
    y = torch.full((n, total), -100, dtype=torch.long)
    y[:, -s:] = symbols
    info = DataInfo(task="lm", input_kind="tokens", input_shape=(total,), num_outputs=k + 2,
                    extra={"source": "copy task", "vocab_size": k + 2, "copy_length": s, "delay": d,
                           "chance_loss": float(np.log(k))})
    return DataBundle(*_split_synthetic(x, y, cfg), info)
