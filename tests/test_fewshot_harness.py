"""benchmarks/fewshot.py on a tiny masked LM: every method at every K and seed, the same sample for all, the plot."""

from __future__ import annotations

import json

from benchmarks import fewshot

LANGUAGE = {"template": "{text} . the movie was [MASK] !", "verbalizer": {"pos": "good", "neg": "bad"},
            "descriptions": {"pos": "a good movie", "neg": "a bad movie"}}
POSITIVE = ["a good movie", "great fun", "i love the story", "the actor is great", "good plot", "a fun film"]
NEGATIVE = ["a bad movie", "awful plot", "i hate the story", "the actor is awful", "boring film", "bad story"]


def test_the_harness_runs_every_method_at_every_k_and_plots(tiny_mlm_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(fewshot, "epochs_for", lambda k: 1)  # the plumbing under test, not the budget
    monkeypatch.setattr(fewshot, "SETFIT_PAIRS", 8)
    pool = [(t, "pos") for t in POSITIVE] + [(t, "neg") for t in NEGATIVE]
    test = [("good fun", "pos"), ("awful movie", "neg")]
    rows = fewshot.run_harness("en", str(tiny_mlm_dir), True, pool, test, ks=[2, 4], seeds=[1, 2], work=tmp_path,
                               methods=None, extra={}, language=LANGUAGE)
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"bench"')]
    assert printed == rows
    trained = {(r["method"], r["k"]) for r in rows if r["k"]}
    assert trained == {(m, k) for m in fewshot.METHODS for k in (2, 4)}
    assert [r["method"] for r in rows if r["k"] == 0] == [fewshot.ZERO_SHOT[0], fewshot.ZERO_SHOT[1],
                                                          fewshot.ZERO_SHOT[1] + " calibrated"]
    for row in rows:
        assert 0.0 <= row["accuracy"] <= 1.0 and row["test_size"] == 2
        if row["k"]:
            assert len(row["per_seed"]) == 2 and row["peak_rss_mb"] > 0 and row["trainable_params"] > 0
    by_method = {r["method"]: r for r in rows if r["k"] == 2}
    assert by_method["frozen encoder + head"]["trainable_params"] < by_method["LoRA (r=8)"]["trainable_params"]
    assert by_method["LoRA (r=8)"]["trainable_params"] < by_method["full fine-tuning"]["trainable_params"]
    table = fewshot.markdown_table(rows).splitlines()
    assert table[0].startswith("| method | K=2 | K=4 |") and len(table) == 2 + len({r["method"] for r in rows})
    fewshot.plot(rows, tmp_path / "fewshot.png", "tiny")
    assert (tmp_path / "fewshot.png").read_bytes()[:4] == b"\x89PNG"


def test_the_budget_is_about_the_same_number_of_example_passes_at_every_k():
    assert [fewshot.epochs_for(k) for k in (8, 16, 32, 64)] == [20, 10, 5, 3]
