"""DNSMOS as a pre-trained teacher: BAK scores per clip and segment, a content cache, Platt calibration.

DNSMOS P.835 (Microsoft; ONNX models shipped, MIT-licensed, in the `speechmos` wheel) rates speech
on three 1-5 scales: SIG (the speech itself), BAK (how intrusive the background noise is) and OVR.
Its model takes exactly 9.01 s at 16 kHz. Like `speechmos.dnsmos.run`, shorter audio is tiled
(repeated end to end) to fill the window and longer audio is scored in 9.01 s windows 1 s apart,
averaged. A clip is scored whole; each 1 s student segment is scored on its own, tiled the same way.
BAK becomes p_noise by a logistic (Platt) fit on the train split's hard labels only.

Each model runs on one thread. ONNX Runtime splits its sums differently for another thread count
(BAK moves in the 7th digit), so a fixed count gives the same scores, to the last digit, whatever
the engine and the machine; corpus jobs use the cores by running one model per worker process.

DNSMOS was built for speech: it calls clean music noisy. `warn_if_not_speech` says so.
Install with `pip install -e '.[dnsmos]'` (speechmos, onnxruntime, librosa).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import expit
from tqdm.auto import tqdm

from .atomic import atomic_write_text
from .audio import load_audio, segment_waveform
from .config import AudioConfig
from .errors import DataError
from .data import UNLABELLED, Manifest, file_sha1, write_soft_labels
from .metrics import expected_calibration_error
from .timing import timed_rounds

SR = 16000                      # DNSMOS's only sample rate
WINDOW = int(9.01 * SR)         # its fixed input: 144,160 samples
TEACHER_NAME = "dnsmos"
METHOD_VERSION = 2              # bump when scores change, so cached ones are recomputed (2: one thread)
EXTRA_HINT = "pip install -e '.[dnsmos]'"
SPLITS = ("train", "val", "test")


def require_dnsmos():
    """(onnxruntime, speechmos.dnsmos), or ImportError telling how to install the `dnsmos` extra."""
    try:
        import onnxruntime
        from speechmos import dnsmos
    except ImportError as e:
        raise ImportError(f"the DNSMOS teacher needs the optional `dnsmos` extra: {EXTRA_HINT} ({e})") from None
    return onnxruntime, dnsmos


class DnsmosModel:
    """DNSMOS P.835 on 16 kHz mono audio: `score(wave)` -> (SIG, BAK, OVR), each 1-5."""

    def __init__(self):
        ort, dnsmos = require_dnsmos()
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # the same sums, hence the same scores, on every machine
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        path = Path(dnsmos.__file__).parent / "dnsmos_models" / "sig_bak_ovr.onnx"
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._polyfit = dnsmos.DNSMOS.get_polyfit_val  # speechmos's mapping of raw outputs to MOS

    @staticmethod
    def windows(wave: np.ndarray) -> np.ndarray:
        """`[k, WINDOW]` float32 windows: tiled when shorter than 9.01 s, else 1 s apart (as speechmos does)."""
        x = np.clip(np.asarray(wave, dtype=np.float32).reshape(-1), -1.0, 1.0)
        if not len(x):
            raise DataError("DNSMOS cannot score empty audio")
        if len(x) < WINDOW:
            return np.resize(x, WINDOW)[None]
        hops = int(np.floor(len(x) / SR - WINDOW / SR)) + 1
        return np.stack([x[i * SR:i * SR + WINDOW] for i in range(hops)])

    def score(self, wave: np.ndarray) -> tuple[float, float, float]:
        """Mean (SIG, BAK, OVR) over the windows of one waveform at 16 kHz."""
        raw = self.session.run(None, {"input_1": self.windows(wave)})[0].astype(np.float64)
        sig, bak, ovr = self._polyfit(None, raw[:, 0], raw[:, 1], raw[:, 2], False)
        return float(np.mean(sig)), float(np.mean(bak)), float(np.mean(ovr))


def _cache_key(path, audio: AudioConfig) -> str:
    """sha1 of the file's bytes plus the segmentation and the method version."""
    tag = f"{file_sha1(path)}-dnsmos-v{METHOD_VERSION}-{audio.segment_seconds}-{audio.hop_seconds}"
    return hashlib.sha1(tag.encode()).hexdigest()


class DnsmosCache:
    """DNSMOS scores of audio files kept by file content under `<cache_dir>/dnsmos/`; the model loads on first need."""

    def __init__(self, cache_dir, audio: AudioConfig, model: DnsmosModel | None = None):
        self.folder, self.audio, self.model = Path(cache_dir) / "dnsmos", audio, model
        self.seg_cfg = dataclasses.replace(audio, sample_rate=SR)

    def entry_path(self, path) -> Path:
        """Where the scores of the audio file `path` are kept."""
        return self.folder / f"{_cache_key(path, self.audio)}.json"

    def has(self, path, segments: bool = False) -> bool:
        """Whether `scores(path, segments)` would come from the cache (reads the file's bytes, not its audio)."""
        entry_path = self.entry_path(path)
        return entry_path.exists() and (not segments or json.loads(entry_path.read_text())["segments"] is not None)

    def scores(self, path, segments: bool = False) -> tuple[dict, bool]:
        """({"clip": [SIG, BAK, OVR], "segments": BAK per segment or None}, whether it came from the cache).

        With `segments`, an entry cached without them is completed (the clip score is kept)."""
        entry_path = self.entry_path(path)
        entry = json.loads(entry_path.read_text()) if entry_path.exists() else None
        cached = entry is not None and (entry["segments"] is not None or not segments)
        if not cached:
            self.model = self.model or DnsmosModel()
            wave = load_audio(path, SR)
            entry = entry or {"clip": self.model.score(wave.numpy()), "segments": None}
            if segments:
                entry["segments"] = [self.model.score(s)[1] for s in segment_waveform(wave, self.seg_cfg).numpy()]
            self.folder.mkdir(parents=True, exist_ok=True)
            atomic_write_text(json.dumps(entry), entry_path)
        return entry, cached


def score_manifest(manifest: Manifest, audio: AudioConfig, cache_dir, segment_splits=SPLITS,
                   model: DnsmosModel | None = None, progress: bool = True) -> tuple[pd.DataFrame, dict]:
    """DNSMOS for every clip (and the segments of clips in `segment_splits`), cached by file content.

    Returns (table with clip_id, split, sig, bak, ovr, cached; {clip_id: BAK per segment}).
    """
    cache = DnsmosCache(cache_dir, audio, model)
    cache.folder.mkdir(parents=True, exist_ok=True)
    rows, segments = [], {}
    bar = tqdm(list(zip(manifest.df["clip_id"], manifest.df["path"], manifest.df["split"])),
               desc="DNSMOS", unit="clip", disable=not progress)
    for clip_id, path, split in bar:
        want_segments = split in segment_splits
        entry, cached = cache.scores(path, want_segments)
        sig, bak, ovr = entry["clip"]
        rows.append({"clip_id": clip_id, "split": split, "sig": sig, "bak": bak, "ovr": ovr, "cached": cached})
        if want_segments:
            segments[clip_id] = np.asarray(entry["segments"], dtype=np.float64)
    return pd.DataFrame(rows), segments


def fit_platt(bak, labels) -> tuple[float, float]:
    """(a, b) of p_noise = sigmoid(a * BAK + b), by maximum likelihood on hard labels (1 = noise)."""
    from sklearn.linear_model import LogisticRegression

    bak, y = np.asarray(bak, dtype=np.float64).reshape(-1, 1), np.asarray(labels).astype(int)
    if len(np.unique(y)) < 2:
        raise DataError(f"Platt calibration needs both labels among the {len(y)} train clips")
    fit = LogisticRegression(C=1e4, max_iter=1000).fit(bak, y)
    return float(fit.coef_[0, 0]), float(fit.intercept_[0])


def platt(bak, a: float, b: float) -> np.ndarray:
    """p_noise of BAK scores under a Platt fit."""
    return expit(a * np.asarray(bak, dtype=np.float64) + b)


def warn_if_not_speech(truth: pd.DataFrame | None) -> None:
    """Warn when a dataset's truth.csv says some clips are not speech: DNSMOS calls clean music noisy."""
    if truth is None or "source_type" not in truth.columns:
        return
    other = truth["source_type"][truth["source_type"] != "speech"]
    if len(other):
        counts = ", ".join(f"{k} {v}" for k, v in other.value_counts().items())
        warnings.warn(f"DNSMOS is built for speech and calls clean music noisy, but {len(other)} of "
                      f"{len(truth)} clips are not speech ({counts}): its soft labels there are unreliable",
                      stacklevel=2)


def dnsmos_soft_labels(manifest: Manifest, audio: AudioConfig, cache_dir, out_csv, truth=None,
                       segment_splits=SPLITS, progress: bool = True) -> dict:
    """Score the dataset with DNSMOS, fit Platt on train, write soft labels (teacher `dnsmos`) to `out_csv`.
    The Platt fit and the ECEs read the clips with a hard label only; unlabelled train clips get soft labels.

    Returns {"path", "a", "b", "ece_train", "ece_val", "scores" (the per-clip table), "seconds"}.
    """
    warn_if_not_speech(truth)
    t0 = time.perf_counter()
    scores, seg_bak = score_manifest(manifest, audio, cache_dir, segment_splits, progress=progress)
    seconds = time.perf_counter() - t0
    labels = manifest.df.set_index("clip_id")["label"]
    train = scores[(scores["split"] == "train") & (labels.loc[scores["clip_id"]].to_numpy() != UNLABELLED)]
    a, b = fit_platt(train["bak"], labels.loc[train["clip_id"]])  # the labelled train clips only
    scores["p_noise"] = platt(scores["bak"], a, b)
    scores["label"] = labels.loc[scores["clip_id"]].to_numpy()  # UNLABELLED for the clips of a transfer set
    ids = scores["clip_id"].tolist()
    write_soft_labels(out_csv, ids, scores["p_noise"],
                      [platt(seg_bak[c], a, b) if c in seg_bak else None for c in ids], teacher=TEACHER_NAME)
    ece = {s: expected_calibration_error(g["label"], g["p_noise"]) if len(g) else float("nan")
           for s, g in scores[scores["label"] != UNLABELLED].groupby("split")}
    return {"path": str(out_csv), "a": a, "b": b, "ece_train": ece.get("train"), "ece_val": ece.get("val"),
            "scores": scores, "seconds": seconds}


def realtime_factor(waves, model: DnsmosModel | None = None, repeats: int = 3) -> float:
    """Audio seconds DNSMOS scores per wall-clock second (one clip score per waveform), median of `repeats`."""
    model = model or DnsmosModel()
    waves = [np.asarray(w, dtype=np.float32) for w in waves]
    model.score(waves[0])  # warm-up on one clip: a pass over all of them takes as long as a timed round
    times = timed_rounds({"dnsmos": lambda: [model.score(w) for w in waves]}, repeats=max(int(repeats), 1),
                         warmup=0)["dnsmos"]
    return sum(len(w) for w in waves) / SR / float(np.median(times))
