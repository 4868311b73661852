"""``textvae interpolate | sample | reconstruct`` on tiny exports, with the collapse warning."""

from __future__ import annotations

import pytest

from tests.helpers_models import (  # noqa: F401
    collapse,
    offline_and_quiet,
    run_cli,
    save_export,
    tiny_model,
    use_latent,
    word_tokenizer,
)
from textvae.hub.loading import load_model

A = "the old dog saw a small cat ."
B = "she will not find the red boxes ."
CALIBRATION = [A, B, "he likes an apple .", "the farmers did not carry the heavy books .", "they met a king ."]
WARNINGS = {
    "collapsed": "KL(q(z|x) || p(z)) < 0.05 nats for every sentence given",
    "none": "the model has no latent path: it is a language model",
    "reported": "the export's reports count 0 active units: posterior means barely vary between sentences",
}
SHORT = ["--max-length", "12"]  # untrained models ramble: keep the decodes short


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    root = tmp_path_factory.mktemp("generation")
    tok = word_tokenizer()
    return {
        "used": save_export(use_latent(tiny_model(tok), CALIBRATION), root / "used", active_units=4),
        "collapsed": save_export(collapse(tiny_model(tok)), root / "collapsed"),
        "none": save_export(tiny_model(tok, latent_path="none"), root / "none"),
        # The weights use z, but the trainer's own report says no unit is active.
        "reported": save_export(use_latent(tiny_model(tok), CALIBRATION), root / "reported", active_units=0),
    }


def test_interpolate_prints_steps_lines_from_reconstruction_a_to_reconstruction_b(exports, capsys):
    code, out, err = run_cli(capsys, "interpolate", exports["used"], A, B, "--steps", 5, *SHORT)
    assert code == 0 and err == []
    lines = out.splitlines()
    assert len(lines) == 5
    model = load_model(exports["used"])
    assert lines[0] == model.reconstruct([A], max_length=12)[0]
    assert lines[-1] == model.reconstruct([B], max_length=12)[0]
    assert lines[0] != lines[-1]  # the codes differ, and so do their decodes


@pytest.mark.parametrize("kind", ["collapsed", "none", "reported"])
def test_an_unused_latent_warns_once_on_stderr(exports, capsys, kind):
    code, out, err = run_cli(capsys, "interpolate", exports[kind], A, B, "--steps", 3, *SHORT)
    assert code == 0
    assert err == [f"warning: the latent code is unused ({WARNINGS[kind]}): the interpolation points decode alike"]
    assert len(out.splitlines()) == 3


def test_slerp_and_beam_keep_the_endpoints_and_the_line_count(exports, capsys):
    code, out, err = run_cli(capsys, "interpolate", exports["used"], A, B, "--steps", 4, "--path", "slerp",
                             "--decode", "beam", "--beam-size", 2, *SHORT)
    assert code == 0 and err == []
    assert len(out.splitlines()) == 4


def test_interpolate_from_a_file_prints_one_block_per_pair(exports, capsys, tmp_path):
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text(f"{A}\t{B}\n\n{B}\t{A}\n", encoding="utf-8")
    code, out, _ = run_cli(capsys, "interpolate", exports["used"], "--from-file", pairs, "--steps", 3, *SHORT)
    assert code == 0
    first, second = out.rstrip("\n").split("\n\n")
    assert len(first.splitlines()) == len(second.splitlines()) == 3
    assert first.splitlines()[0] == second.splitlines()[-1]  # A's reconstruction ends the reversed pair


def test_sample_is_reproducible_with_a_seed(exports, capsys):
    args = ("sample", exports["used"], "-n", 4, "--decode", "sample", "--temperature", 0.8, "--top-p", 0.9, *SHORT)
    code, first, err = run_cli(capsys, *args, "--seed", 1)
    assert code == 0 and err == [] and len(first.splitlines()) == 4
    assert run_cli(capsys, *args, "--seed", 1)[1] == first
    assert run_cli(capsys, *args, "--seed", 2)[1] != first


@pytest.mark.parametrize("decode", [[], ["--decode", "beam", "--beam-size", "2"], ["--decode", "sample"]])
def test_no_repeat_ngram_size_stops_the_loops_of_every_strategy(exports, capsys, decode):
    args = ("sample", exports["used"], "-n", 6, "--max-length", 20, *decode)
    loops = run_cli(capsys, *args)[1].splitlines()
    assert any(len(set(line.split())) < len(line.split()) for line in loops)  # an untrained model repeats words
    code, out, err = run_cli(capsys, *args, "--no-repeat-ngram-size", 1)
    assert code == 0 and err == [] and len(out.splitlines()) == 6
    assert all(len(set(line.split())) == len(line.split()) for line in out.splitlines())
    penalised = run_cli(capsys, *args, "--repetition-penalty", 50)[1].splitlines()
    assert len(penalised) == 6 and penalised != loops  # transformers' processor reached the head's logits


def test_sample_warns_for_a_model_without_a_latent(exports, capsys):
    code, out, err = run_cli(capsys, "sample", exports["none"], "-n", 2, *SHORT)
    assert code == 0 and len(out.splitlines()) == 2
    assert len(err) == 1 and err[0].startswith("warning: the latent code is unused")


def test_reconstruct_prints_input_and_reconstruction_per_line(exports, capsys, tmp_path):
    source = tmp_path / "in.txt"
    source.write_text(f"{A}\n\n{B}\n", encoding="utf-8")
    code, out, err = run_cli(capsys, "reconstruct", exports["used"], source, "--batch-size", 1, *SHORT)
    assert code == 0 and err == [f"note: {source}: 1 blank line skipped (line 2): 2 sentences follow the other "
                                 "lines in order"]
    model = load_model(exports["used"])
    expected = [f"{s}\t{r}" for s, r in zip([A, B], model.reconstruct([A, B], max_length=12), strict=True)]
    assert out.splitlines() == expected


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["interpolate", "{used}", A, B, "--steps", "1"], "argument --steps: must be at least 2, got 1"),
        (["interpolate", "{used}", A, B, "--decode", "nucleus"], "argument --decode: invalid choice: 'nucleus' (choose from 'greedy', 'beam', 'sample')"),
        (["interpolate", "{used}", A, B, "--path", "arc"], "argument --path: invalid choice: 'arc' (choose from 'lerp', 'slerp')"),
        (["interpolate", "{used}", A], "interpolate needs two sentences (or --from-file PAIRS.tsv)"),
        (["interpolate", "{missing}", A, B], "checkpoint not found"),
        (["sample", "{used}", "--temperature", "0.5"], "--temperature only apply to --decode sample"),
        (["sample", "{used}", "-n", "0"], "argument -n: must be at least 1, got 0"),
        (["sample", "{used}", "--decode", "sample", "--top-p", "1.5"], "argument --top-p: must be in (0, 1], got 1.5"),
        (["reconstruct", "{used}", "{missing}"], "no such file"),
        (["sample", "{used}", "--no-repeat-ngram-size", "0"], "argument --no-repeat-ngram-size: must be at least 1, got 0"),
        (["interpolate", "{used}", A, B, "--repetition-penalty", "-1"], "argument --repetition-penalty: must be a positive"),
    ],
)
def test_bad_inputs_exit_2_with_one_line(exports, capsys, tmp_path, argv, message):
    names = {"used": exports["used"], "missing": tmp_path / "missing"}
    code, out, err = run_cli(capsys, *[a.format(**names) for a in argv])
    assert code == 2 and out == ""
    assert len(err) == 1 and err[0].startswith("textvae: error: ") and message in err[0], err
