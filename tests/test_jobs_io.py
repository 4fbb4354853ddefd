"""Corpus job inputs (folders, files, lists, labels.csv, JSON-lines manifests) and outputs (.csv / .jsonl)."""
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mark2_lib.errors import DataError
from mark2_lib.jobs.inputs import read_inputs, total_seconds
from mark2_lib.jobs.outputs import read_rows, write_rows

SR = 8000


def wav(path: Path, seconds: float = 0.25) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.zeros(int(SR * seconds), dtype=np.float32), SR, subtype="PCM_16")
    return path


@pytest.fixture
def corpus(tmp_path):
    """tmp/corpus/{a.wav, sub/b.flac, sub/c.wav, notes.txt}."""
    root = tmp_path / "corpus"
    wav(root / "a.wav")
    wav(root / "sub" / "c.wav", 0.5)
    sf.write(root / "sub" / "b.flac", np.zeros(SR, dtype=np.float32), SR)
    (root / "notes.md").write_text("not audio")
    return root


def test_folder_is_recursed_sorted_and_audio_only(corpus):
    items = read_inputs(corpus)
    assert [Path(i.path).relative_to(corpus).as_posix() for i in items] == ["a.wav", "sub/b.flac", "sub/c.wav"]
    assert [i.index for i in items] == [0, 1, 2]
    assert all(Path(i.path).is_absolute() and not i.error and i.fields == {} for i in items)
    assert items[0].source == f"{corpus} (folder)"
    assert items[0].clip_id == str(corpus / "a.wav")  # no root: the path as given


def test_root_relative_ids_and_outside_root(corpus, tmp_path):
    outside = wav(tmp_path / "elsewhere" / "x.wav")
    items = read_inputs([corpus, outside], root=corpus)
    assert [i.clip_id for i in items] == ["a.wav", "sub/b.flac", "sub/c.wav", str(outside)]


def test_single_files_empty_folder_and_missing_input(corpus, tmp_path):
    (tmp_path / "empty").mkdir()
    items = read_inputs([str(corpus / "a.wav"), tmp_path / "empty"])
    assert items[0].clip_id == str(corpus / "a.wav") and not items[0].error
    assert "folder holds no audio files" in items[1].error and str(tmp_path / "empty") in items[1].error
    with pytest.raises(DataError, match="nope.wav: input not found"):
        read_inputs([corpus, tmp_path / "nope.wav"])


def test_file_list_relative_to_its_folder(corpus, tmp_path):
    lst = corpus / "sub" / "list.txt"
    lst.write_text(f"# my clips\nc.wav\n\n../a.wav\n{corpus / 'sub' / 'b.flac'}\ngone.wav\n")
    items = read_inputs(lst)
    assert [i.path for i in items[:3]] == [str(corpus / p) for p in ("sub/c.wav", "a.wav", "sub/b.flac")]
    assert [i.clip_id for i in items[:2]] == ["c.wav", "../a.wav"]  # as written
    assert [i.source for i in items] == [f"{lst} line {n}" for n in (2, 4, 5, 6)]
    assert not any(i.error for i in items[:3])
    assert items[3].error == f"{lst} line 6: {corpus / 'sub' / 'gone.wav'}: file not found"


def test_labels_csv_ids_fields_and_relative_paths(corpus):
    csv = corpus / "labels.csv"
    csv.write_text("clip_id,path,label,split\nk1,a.wav,clean,train\n\nk2,sub\\c.wav,1,val\n"
                   "k3,missing.wav,0,test\n,sub/b.flac,0,test\n")
    items = read_inputs(csv, root=corpus.parent)
    assert [i.clip_id for i in items[:3]] == ["k1", "k2", "k3"]
    assert items[1].path == str(corpus / "sub" / "c.wav")
    assert items[0].fields == {"clip_id": "k1", "path": "a.wav", "label": "clean", "split": "train"}
    assert [i.source for i in items] == [f"{csv} line {n}" for n in (2, 4, 5, 6)]
    assert items[2].error.startswith(f"{csv} line 5: ") and items[2].error.endswith("file not found")
    assert items[3].error == f"{csv} line 6: empty clip_id"
    (corpus / "bad.csv").write_text("name,file\nx,a.wav\n")
    with pytest.raises(DataError, match="bad.csv: missing column.*clip_id, path"):
        read_inputs(corpus / "bad.csv")


def test_manifest_relative_paths_extra_fields_and_clip_ids(corpus, tmp_path):
    m = corpus / "sub" / "m.jsonl"
    lines = [{"audio_filepath": "c.wav", "duration": 0.5, "text": "hi", "speaker": {"id": 7}},
             {"audio_filepath": str(corpus / "a.wav"), "clip_id": "A"},
             {"audio_filepath": "b.flac", "lang": "fr"}]
    m.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    items = read_inputs(m, root=corpus)
    assert [i.path for i in items] == [str(corpus / p) for p in ("sub/c.wav", "a.wav", "sub/b.flac")]
    assert [i.clip_id for i in items] == ["sub/c.wav", "A", "sub/b.flac"]
    assert [i.fields for i in items] == lines and not any(i.error for i in items)
    assert read_inputs(m)[0].clip_id == "c.wav"  # no root: audio_filepath as written
    assert total_seconds(items) == pytest.approx(0.5 + 0.25 + 1.0)  # duration field, else soundfile


def test_malformed_manifest_lines_name_file_and_line_and_none_are_dropped(corpus):
    m = corpus / "m.json"  # NeMo's manifests are often *.json, still one object per line
    m.write_text('{"audio_filepath": "a.wav"}\n'
                 "{not json\n"
                 "\n"
                 "[1, 2]\n"
                 '{"duration": 3.0}\n'
                 '{"audio_filepath": 5}\n'
                 '{"audio_filepath": "gone.wav", "x": 1}\n'
                 "   \n")
    items = read_inputs(m)
    non_blank = [t for t in m.read_text().splitlines() if t.strip()]
    assert len(items) == len(non_blank) == 6
    errors = [i.error for i in items]
    assert errors[0] == ""
    assert errors[1].startswith(f"{m} line 2: not valid JSON (")
    assert errors[2] == f"{m} line 4: not a JSON object (got list)"
    assert errors[3] == f"{m} line 5: no audio_filepath field"
    assert errors[4].startswith(f"{m} line 6: audio_filepath must be a non-empty string")
    assert errors[5] == f"{m} line 7: {corpus / 'gone.wav'}: file not found"
    assert items[3].fields == {"duration": 3.0} and items[5].fields == {"audio_filepath": "gone.wav", "x": 1}
    assert items[1].clip_id == f"{m} line 2" and items[1].path == ""  # no path: the source names it
    assert len({i.clip_id for i in items}) == 6
    assert total_seconds(items) == pytest.approx(0.25)  # error items count 0


def test_duplicate_clip_ids_across_inputs(corpus):
    m = corpus / "m.jsonl"
    m.write_text('{"audio_filepath": "a.wav"}\n{"audio_filepath": "sub/c.wav", "clip_id": "sub/b.flac"}\n')
    items = read_inputs([corpus, m], root=corpus)
    assert [i.error for i in items[:3]] == ["", "", ""]
    assert items[3].error == (f"{m} line 1: duplicate clip_id 'a.wav', already used by {corpus} (folder)")
    assert "duplicate clip_id 'sub/b.flac'" in items[4].error and len(items) == 5


# ----------------------------------------------------------------------------- outputs

COLUMNS = ["clip_id", "p_noise", "label", "error"]


def scored(items):
    return [dict(clip_id=i.clip_id, p_noise=None if i.error else 0.1 * (n + 1) / 3, label="noise",
                 error=i.error, extra="not a column") for n, i in enumerate(items)]


def test_jsonl_keeps_every_input_field_and_renames_clashes(corpus, tmp_path):
    m = corpus / "m.jsonl"
    m.write_text('{"audio_filepath": "a.wav", "text": "hi", "label": "speech", "z": [1, {"k": null}]}\n'
                 '{"audio_filepath": "gone.wav"}\n')
    items = read_inputs(m, root=corpus)
    rows = scored(items)
    out = write_rows(rows, tmp_path / "out.jsonl", COLUMNS, items)
    back = read_rows(out)
    assert list(back[0]) == ["audio_filepath", "text", "input_label", "z"] + COLUMNS
    assert back[0]["input_label"] == "speech" and back[0]["label"] == "noise" and back[0]["z"] == [1, {"k": None}]
    assert back[0]["p_noise"] == rows[0]["p_noise"]  # exact float round trip
    assert back[1]["p_noise"] is None and "file not found" in back[1]["error"]
    # feeding the output back in as a manifest keeps everything again
    again = read_inputs(out, root=corpus)
    assert again[0].fields == back[0] and again[0].clip_id == "a.wav"


def test_csv_writes_columns_in_order_with_exact_floats(tmp_path):
    rows = [dict(clip_id="a", p_noise=1 / 3, label="noise", error=""),
            dict(clip_id="b, c", p_noise=None, label=None, error="bad")]
    out = write_rows(rows, tmp_path / "out.csv", ["label", "clip_id", "p_noise", "error"])
    assert out.read_text() == f"label,clip_id,p_noise,error\nnoise,a,{1 / 3!r},\n,\"b, c\",,bad\n"
    assert float(out.read_text().splitlines()[1].split(",")[2]) == 1 / 3
    write_rows(rows, tmp_path / "six.csv", ["p_noise"], float_format="%.6f")
    assert (tmp_path / "six.csv").read_text() == 'p_noise\n0.333333\n""\n'  # csv quotes a lone empty cell


def test_rewrites_are_byte_identical_and_bad_requests_refused(corpus, tmp_path):
    items = read_inputs(corpus, root=corpus)
    rows = scored(items)
    for name in ("x.csv", "x.jsonl"):
        first = write_rows(rows, tmp_path / name, COLUMNS, items).read_bytes()
        assert write_rows(scored(read_inputs(corpus, root=corpus)), tmp_path / name, COLUMNS, items).read_bytes() == first
    assert write_rows(rows, tmp_path / "all.jsonl", None).read_text().splitlines()[0] == json.dumps(rows[0])
    with pytest.raises(ValueError, match=r"out.parquet: unknown output format '.parquet'"):
        write_rows(rows, tmp_path / "out.parquet", COLUMNS)
    with pytest.raises(ValueError, match="3 rows but 2 items"):
        write_rows(rows, tmp_path / "out.jsonl", COLUMNS, items[:2])
    assert not (tmp_path / "out.parquet").exists() and not (tmp_path / "out.jsonl").exists()
    (tmp_path / "bad.jsonl").write_text('{"a": 1}\n\n[2]\n')
    with pytest.raises(DataError, match="bad.jsonl line 3: not a JSON object"):
        read_rows(tmp_path / "bad.jsonl")
