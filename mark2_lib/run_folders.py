"""Run folders: the settings a run records in config.json, the run names hashed from them, where a
run goes when the folder it was given holds a run trained with other settings, and loading a
finished run as a classifier (`load_classifier`)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from .config import RUNTIME_FIELDS, AudioConfig, ModelConfig, TrainConfig
from .models import ClipClassifier, WaveformClassifier

ON_CONFLICT = ("raise", "new")


def run_name(prefix: str, cfg: TrainConfig, audio: AudioConfig, model_cfg: ModelConfig, data_key: str) -> str:
    """`prefix-<hash>`: the hash covers everything that changes the result, so runs are reused safely."""
    train = {k: v for k, v in cfg.to_dict().items() if k not in RUNTIME_FIELDS}
    blob = json.dumps([train, audio.to_dict(), model_cfg.to_dict(), data_key], sort_keys=True, default=str)
    return f"{prefix}-{hashlib.sha1(blob.encode()).hexdigest()[:8]}"


def run_config(cfg: TrainConfig, audio: AudioConfig, model_cfg: ModelConfig, n_train: int, n_val: int,
               extra_config: dict | None = None) -> dict:
    """What a run writes to its config.json, and what a resumed run must match."""
    return {"train": cfg.to_dict(), "audio": audio.to_dict(), "model": model_cfg.to_dict(),
            "n_train": n_train, "n_val": n_val, **(extra_config or {})}


def config_differences(path: Path, config: dict) -> list[str]:
    """The top-level keys in which the config.json at `path` differs from `config`, settings that do not
    change the result (RUNTIME_FIELDS) aside; [] when they agree or there is no file."""
    path = Path(path)
    if not path.exists():
        return []
    old = json.loads(path.read_text())
    new = json.loads(json.dumps(config, default=str))

    def strip(c):
        return {**c, "train": {k: v for k, v in c.get("train", {}).items() if k not in RUNTIME_FIELDS}}

    old, new = strip(old), strip(new)
    return sorted(k for k in set(old) | set(new) if k not in old or k not in new or old[k] != new[k])


def check_same_config(path: Path, config: dict) -> None:
    """ValueError naming what differs unless the run whose config.json is at `path` may be resumed with `config`."""
    diff = config_differences(path, config)
    if diff:
        raise ValueError(f"{path}: cannot resume, the run was started with a different configuration "
                         f"(differs in {diff}); use another run name or resume=False")


def place_run(run_dir, config: dict, cfg: TrainConfig, audio: AudioConfig, model_cfg: ModelConfig,
              data_key: str) -> tuple[Path, str | None]:
    """The folder a resumable run with these settings trains in, and a note when it is not `run_dir`.

    When `run_dir` holds a run (last.pt) trained with other settings, that run is left untouched and
    this one goes beside it, to `<run_dir>-<hash>` with the hash of `run_name` (so the same settings
    find the same folder again); the note says what was found and where the run goes.
    """
    run_dir = Path(run_dir)
    diff = config_differences(run_dir / "config.json", config) if (run_dir / "last.pt").exists() else []
    if not diff:
        return run_dir, None
    new_dir = run_dir.parent / run_name(run_dir.name, cfg, audio, model_cfg, data_key)
    if (new_dir / "result.json").exists():
        there = "finished there before: its result is reused"
    elif (new_dir / "last.pt").exists():
        there = "started there before: it continues"
    else:
        there = "a new run"
    return new_dir, (f"{run_dir} holds a run trained with other settings (they differ in {diff}): it is left "
                     f"untouched, and this run goes to {new_dir} ({there})")


def load_classifier(run_dir) -> WaveformClassifier:
    """Rebuild a trained model from `config.json` + `encoder.pt` + `head.pt` (weights_only loading), for inference.

    Returns a fused WaveformClassifier (eval mode, see `Encoder.fuse`): waveform batch `[B, samples]` at
    the run's sample rate -> clip logits `[B, 2]` (index 1 = noise)."""
    run_dir = Path(run_dir)
    for name in ("config.json", "encoder.pt", "head.pt"):
        if not (run_dir / name).is_file():
            raise FileNotFoundError(f"{run_dir / name} is missing: is {run_dir} a finished training run?")
    config = json.loads((run_dir / "config.json").read_text())
    try:
        audio = AudioConfig.from_dict(config["audio"])  # runs saved before `framing` existed: "segment"
        model_cfg = ModelConfig.from_dict(config["model"])  # runs saved before a field existed: as trained
    except KeyError as e:
        raise ValueError(f"{run_dir / 'config.json'}: no {e} section; is it a training run's config?") from None
    except (TypeError, ValueError) as e:
        raise ValueError(f"{run_dir / 'config.json'}: {e}") from None
    model = ClipClassifier(audio, model_cfg)
    model.encoder.load_state_dict(torch.load(run_dir / "encoder.pt", map_location="cpu", weights_only=True))
    model.head.load_state_dict(torch.load(run_dir / "head.pt", map_location="cpu", weights_only=True))
    return WaveformClassifier(audio, model).fuse()
