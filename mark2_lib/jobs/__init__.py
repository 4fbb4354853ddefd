"""Corpus-scale jobs: score every file of a corpus with a teacher (soft labels) or the student
(predictions), in shards that a killed job resumes from, on one machine or a Ray cluster.

- inputs.py: what to score: folders, file lists, labels.csv or JSON-lines manifests -> `Item`s
- shards.py: shards, the `<out>.parts/` folder, resume, assembly in input order
- engines.py: who scores the shards: "serial", "local" (a process per core) or "ray" (Ray Data actors)
- scorers.py: what scores a shard: the student, or a trained run as teacher
- teachers.py: the other teachers: a TorchScript model, DNSMOS
- score.py: the two jobs, `soft_labels_job` and `predict_job` (the `mark2 soft-labels` and `mark2 predict` commands)
- ray_engine.py: the Ray Data engine (the `scale` extra)
- outputs.py: rows to `.csv` or `.jsonl` (JSON lines keep every input field)
"""
