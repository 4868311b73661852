import dataclasses

import pytest

from tests.data.conftest import assert_one_line_error
from textvae.data.config import DataConfig
from textvae.data.pipeline import prepare_data, split_sources, tokenize_split
from textvae.data.synthetic import render, write_corpus
from textvae.data.tokenization import BOS_ID, EOS_ID, load_meta
from textvae.errors import TextVAEError

LONG = "one two three four five six seven"


def texts(tok, split) -> list[str]:
    return tok.batch_decode(list(split.ids), skip_special_tokens=True)


@pytest.fixture(scope="module")
def small_synthetic(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("syn"), n_train=400, n_valid=50, n_test=50)


@pytest.fixture
def long_corpus(make_corpus):
    return make_corpus(train=f"a b\n{LONG}\n\nc d e\n", valid=f"{LONG}\na\n", test="b c\n")


def test_synthetic_splits_are_encoded_with_bos_eos_and_factors(small_synthetic):
    data = prepare_data(DataConfig(corpus=str(small_synthetic)))
    train = data.splits["train"]
    assert len(train.ids) == len(train.line_numbers) == len(train.factors) == 400
    assert all(row[0] == BOS_ID and row[-1] == EOS_ID for row in train.ids)
    assert [render(f) for f in train.factors] == texts(data.tokenizer, train)
    assert data.corpus_name == small_synthetic.name


def test_default_config_uses_the_embedded_corpus():
    data = prepare_data(DataConfig(max_train_lines=200), splits=("train",))
    assert data.corpus_name == "synthetic"
    assert len(data.splits["train"].ids) == 200 and len(data.splits["train"].factors) == 200
    assert "first 200 of 20,000 used (data.max_train_lines)" in data.splits["train"].report.summary()


def test_truncate_keeps_the_first_tokens_then_eos(long_corpus):
    data = prepare_data(DataConfig(corpus=str(long_corpus), max_length=3, length_policy="truncate"))
    train = data.splits["train"]
    tok = data.tokenizer
    assert train.report.truncated == 1 and train.report.blank_skipped == 1
    assert tok.convert_ids_to_tokens(train.ids[1]) == ["<bos>", "one", "two", "three", "<eos>"]
    assert all(len(row) <= 5 for row in train.ids)
    assert train.line_numbers.tolist() == [1, 2, 4]
    assert train.report.summary() == (f"train: 3 sentences from {long_corpus / 'train.txt'} "
                                      "(1 blank lines skipped; 1 truncated to 3 tokens)")


def test_drop_removes_long_sentences_and_counts_them(long_corpus):
    data = prepare_data(DataConfig(corpus=str(long_corpus), max_length=3, length_policy="drop"))
    valid = data.splits["valid"]
    assert texts(data.tokenizer, valid) == ["a"] and valid.line_numbers.tolist() == [2] and valid.report.dropped == 1
    assert "1 dropped as longer than 3 tokens" in valid.report.summary()
    assert texts(data.tokenizer, data.splits["train"]) == ["a b", "c d e"]


def test_drop_keeps_factors_aligned(small_synthetic):
    data = prepare_data(DataConfig(corpus=str(small_synthetic), max_length=9, length_policy="drop"))
    train = data.splits["train"]
    assert 0 < train.report.dropped < 400
    assert [render(f) for f in train.factors] == texts(data.tokenizer, train)


def test_max_length_counts_tokens_not_bos_eos(long_corpus):
    data = prepare_data(DataConfig(corpus=str(long_corpus), max_length=7, length_policy="drop"))
    assert data.splits["train"].report.dropped == 0
    assert data.tokenizer.model_max_length == 9


@pytest.mark.parametrize(("option", "value", "message"), [
    ("length_policy", "cut", "'data.length_policy': expected one of 'truncate', 'drop', got 'cut'"),
    ("max_length", 0, "'data.max_length': must be at least 1"),
    ("max_train_lines", 0, "'data.max_train_lines': must be at least 1"),
    ("tokenizer", "no/such/dir", "data.tokenizer: 'no/such/dir' is neither a kind"),
])
def test_bad_options_are_named(long_corpus, option, value, message):
    with pytest.raises(TextVAEError, match=message):
        prepare_data(dataclasses.replace(DataConfig(corpus=str(long_corpus)), **{option: value}))


def test_tokenizer_is_trained_on_limited_train_and_saved(small_synthetic, tmp_path):
    cfg = DataConfig(corpus=str(small_synthetic), max_train_lines=100)
    data = prepare_data(cfg, tokenizer_dir=tmp_path / "tok")
    meta = load_meta(tmp_path / "tok")
    assert meta["kind"] == "word" and meta["corpus"] == small_synthetic.name and meta["train_lines"] == 100
    reloaded = prepare_data(dataclasses.replace(cfg, tokenizer=str(tmp_path / "tok")))
    assert reloaded.splits["test"].ids == data.splits["test"].ids


def test_tokenizer_from_another_corpus_is_rejected(small_synthetic, make_corpus, tmp_path):
    prepare_data(DataConfig(corpus=str(small_synthetic)), tokenizer_dir=tmp_path / "tok", splits=("train",))
    other = make_corpus(train="colorless green ideas sleep furiously\nthe dog sleeps\n")
    with pytest.raises(TextVAEError, match=f"data.tokenizer {tmp_path / 'tok'} was built on corpus "
                                           f"'{small_synthetic.name}' and maps 62.5% of the train tokens"):
        prepare_data(DataConfig(corpus=str(other), tokenizer=str(tmp_path / "tok")))


def test_subword_tokenizer_from_another_corpus_is_rejected(small_synthetic, make_corpus, tmp_path):
    # BPE never says <unk>; on foreign words it falls back to ever smaller pieces.
    prepare_data(DataConfig(corpus=str(small_synthetic), tokenizer="bpe", vocab_size=200),
                 tokenizer_dir=tmp_path / "tok", splits=("train",))
    assert 1.0 < load_meta(tmp_path / "tok")["fertility"] < 2.0
    prepare_data(DataConfig(corpus=str(small_synthetic), tokenizer=str(tmp_path / "tok")), splits=("test",))
    other = make_corpus(train="colorless green ideas sleep furiously\nquixotic zephyrs waltz\n")
    with pytest.raises(TextVAEError, match=r"was built on corpus .* and cuts the train words of .* into [\d.]+ "
                                           r"tokens each \([\d.]+ on its own corpus, limit 1.5x\)"):
        prepare_data(DataConfig(corpus=str(other), tokenizer=str(tmp_path / "tok")))


def test_factor_file_that_does_not_match_is_an_error(make_corpus):
    d = make_corpus()
    (d / "train.factors.jsonl").write_text('{"a": 1}\n')
    with pytest.raises(TextVAEError, match="train.factors.jsonl: 1 rows do not match the 2 lines"):
        prepare_data(DataConfig(corpus=str(d)))


# -- Hugging Face datasets -----------------------------------------------------------------

@pytest.fixture(scope="module")
def saved_dataset(tmp_path_factory):
    import datasets

    datasets.disable_progress_bars()
    rows = {"train": ["the dog ran", "", "a cat sat"], "validation": ["the cat ran"], "test": ["a dog sat"]}
    path = tmp_path_factory.mktemp("hf") / "tiny"
    datasets.DatasetDict({s: datasets.Dataset.from_dict({"sentence": r, "label": [0] * len(r)})
                          for s, r in rows.items()}).save_to_disk(str(path))
    return path


def test_hf_saved_dataset_supplies_the_sentences(saved_dataset):
    data = prepare_data(DataConfig(hf_dataset=str(saved_dataset), text_column="sentence"))
    assert texts(data.tokenizer, data.splits["train"]) == ["the dog ran", "a cat sat"]
    assert data.splits["train"].line_numbers.tolist() == [1, 3]
    assert data.splits["train"].report.blank_skipped == 1
    assert texts(data.tokenizer, data.splits["valid"]) == ["the cat ran"]
    assert data.corpus_name == "tiny" and data.splits["test"].factors is None


def test_hf_missing_column_names_the_option_and_columns(saved_dataset):
    with pytest.raises(TextVAEError, match=r"data.text_column: no column 'text' in .*tiny \(columns: sentence, label\)"):
        prepare_data(DataConfig(hf_dataset=str(saved_dataset)))


def test_hf_data_files_folder_with_missing_split(tmp_path):
    folder = tmp_path / "csvs"
    folder.mkdir()
    (folder / "train.csv").write_text("text\nthe dog\na cat\n")
    (folder / "test.csv").write_text("text\nthe cat\n")
    with pytest.raises(TextVAEError, match="data.hf_dataset: .*csvs has no validation/valid/dev split"):
        prepare_data(DataConfig(hf_dataset=str(folder)))
    (folder / "validation.csv").write_text("text\na dog\n")
    data = prepare_data(DataConfig(hf_dataset=str(folder)))
    assert texts(data.tokenizer, data.splits["valid"]) == ["a dog"]


def test_cli_prepare_reports_truncation(cli, long_corpus, tmp_path):
    rc, out, err = cli("data", "prepare", f"data.corpus={long_corpus}", "data.max_length=3",
                       "--tokenizer-dir", tmp_path / "tok")
    assert rc == 0, err
    assert "train: 3 sentences" in out and "1 truncated to 3 tokens" in out
    assert (tmp_path / "tok" / "tokenizer.json").is_file()


def test_cli_prepare_reports_drops_from_a_recipe(cli, long_corpus, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"data:\n  corpus: {long_corpus}\n  max_length: 3\n  length_policy: drop\n")
    rc, out, _ = cli("data", "prepare", recipe)
    assert rc == 0 and "valid: 1 sentences" in out and "1 dropped as longer than 3 tokens" in out


def test_cli_prepare_unknown_policy(cli, long_corpus):
    rc, _, err = cli("data", "prepare", f"data.corpus={long_corpus}", "data.length_policy=cut")
    assert_one_line_error(rc, err, "data.length_policy", "'cut'")


def test_cli_prepare_rejects_a_tokenizer_from_another_corpus(cli, small_synthetic, make_corpus, tmp_path):
    prepare_data(DataConfig(corpus=str(small_synthetic)), tokenizer_dir=tmp_path / "tok", splits=("train",))
    other = make_corpus(train="colorless green ideas sleep furiously\nthe dog sleeps\n")
    rc, _, err = cli("data", "prepare", f"data.corpus={other}", f"data.tokenizer={tmp_path / 'tok'}")
    assert_one_line_error(rc, err, str(tmp_path / "tok"), f"corpus '{small_synthetic.name}'", "62.5%")


def test_cli_prepare_missing_split(cli, make_corpus):
    d = make_corpus(valid=None)
    rc, _, err = cli("data", "prepare", f"data.corpus={d}")
    assert_one_line_error(rc, err, str(d), "missing the valid split")


def test_cli_prepare_hf_missing_column(cli, saved_dataset):
    rc, _, err = cli("data", "prepare", f"data.hf_dataset={saved_dataset}", "data.text_column=body")
    assert_one_line_error(rc, err, "data.text_column", "'body'", "sentence, label")


@pytest.mark.parametrize("policy", ["truncate", "drop"])
def test_a_split_encoded_for_evaluation_is_the_split_training_reads(long_corpus, policy):
    cfg = DataConfig(corpus=str(long_corpus), max_length=3, length_policy=policy)
    prepared = prepare_data(cfg).splits["valid"]
    _, sources = split_sources(cfg, ["valid"])
    evaluated = tokenize_split(prepare_data(cfg).tokenizer, sources["valid"], cfg)
    assert evaluated.ids == prepared.ids and evaluated.line_numbers.tolist() == prepared.line_numbers.tolist()
    assert evaluated.report == prepared.report
    assert (prepared.report.truncated, prepared.report.dropped) == ((1, 0) if policy == "truncate" else (0, 1))


# -- the cache -----------------------------------------------------------------------------

def cached(corpus, tmp_path, **options) -> DataConfig:
    return DataConfig(corpus=str(corpus), cache_dir=str(tmp_path / "cache"), **options)


def test_a_second_prepare_reuses_every_cache_entry(long_corpus, tmp_path):
    first = prepare_data(cached(long_corpus, tmp_path))
    again = prepare_data(cached(long_corpus, tmp_path))
    assert first.tokenizer_cache.built_in_s is not None and again.tokenizer_cache.built_in_s is None
    for split, data in first.splits.items():
        assert data.cache.built_in_s is not None and again.splits[split].cache.built_in_s is None
        assert data.cache.path.parent == tmp_path / "cache" / "tokenized"
        assert again.splits[split].ids == data.ids and again.splits[split].report == data.report
    assert again.tokenizer.get_vocab() == first.tokenizer.get_vocab()


def test_a_changed_file_gets_a_new_entry_never_a_stale_one(long_corpus, tmp_path):
    first = prepare_data(cached(long_corpus, tmp_path), splits=("valid",))
    (long_corpus / "valid.txt").write_text("c a b\n")
    second = prepare_data(cached(long_corpus, tmp_path), splits=("valid",))
    assert second.splits["valid"].cache.path != first.splits["valid"].cache.path
    assert texts(second.tokenizer, second.splits["valid"]) == ["c a b"]
    assert second.tokenizer_cache.path == first.tokenizer_cache.path  # the train split did not change
    (long_corpus / "train.txt").write_text("c a\n")
    third = prepare_data(cached(long_corpus, tmp_path), splits=("valid",))
    assert third.tokenizer_cache.path != first.tokenizer_cache.path
    assert third.tokenizer.convert_ids_to_tokens(third.splits["valid"].ids[0]) == ["<bos>", "c", "a", "<unk>", "<eos>"]


def test_the_length_policy_is_part_of_the_key(long_corpus, tmp_path):
    keep = prepare_data(cached(long_corpus, tmp_path, max_length=3), splits=("valid",)).splits["valid"]
    drop = prepare_data(cached(long_corpus, tmp_path, max_length=3, length_policy="drop"), splits=("valid",))
    assert drop.splits["valid"].cache.path != keep.cache.path
    assert (len(keep.ids), len(drop.splits["valid"].ids)) == (2, 1)


def test_a_damaged_cache_is_reported_in_one_line_and_rebuilt(long_corpus, tmp_path, capsys):
    first = prepare_data(cached(long_corpus, tmp_path), splits=("train",)).splits["train"]
    expected = list(first.ids)  # read before the damage: the rows are mapped from the file
    ids = first.cache.path / "ids.bin"
    ids.write_bytes(ids.read_bytes()[:-2])
    capsys.readouterr()
    again = prepare_data(cached(long_corpus, tmp_path), splits=("train",)).splits["train"]
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and str(first.cache.path) in warnings[0] and "ids.bin" in warnings[0]
    assert again.cache.built_in_s is not None and list(again.ids) == expected


def test_small_chunks_give_the_ids_of_one_chunk(small_synthetic, tmp_path, monkeypatch):
    whole = prepare_data(DataConfig(corpus=str(small_synthetic), cache_dir=str(tmp_path / "a")))
    monkeypatch.setattr("textvae.data.reading.CHUNK_BYTES", 200)
    chunked = prepare_data(DataConfig(corpus=str(small_synthetic), cache_dir=str(tmp_path / "b")))
    for split, data in whole.splits.items():
        assert chunked.splits[split].ids == data.ids and chunked.splits[split].factors == data.factors


def test_a_corpus_with_old_mac_line_endings_is_read_line_by_line(make_corpus, tmp_path):
    corpus = make_corpus(train=b"a b\rc d\r\rb c\r")
    train = prepare_data(cached(corpus, tmp_path), splits=("train",)).splits["train"]
    assert len(train.ids) == 3 and train.report.blank_skipped == 1 and train.line_numbers.tolist() == [1, 2, 4]


def test_cli_prepare_reports_where_the_cache_is_and_its_size(cli, long_corpus, tmp_path):
    options = ("data", "prepare", f"data.corpus={long_corpus}", f"data.cache_dir={tmp_path / 'c'}")
    rc, out, err = cli(*options)
    assert rc == 0, err
    caches = [line for line in out.splitlines() if line.startswith("  cache: ")]
    assert len(caches) == 4  # three splits and the tokenizer
    assert all(str(tmp_path / "c") in line and " MB, built in " in line for line in caches)
    rc, out, _ = cli(*options)
    assert rc == 0 and out.count(" MB, reused)") == 4


def test_cli_cache_lists_and_clears_entries_but_never_corpora(cli, long_corpus, tmp_path):
    root = tmp_path / "c"
    (root / "data" / "ptb").mkdir(parents=True)  # downloads share the folder by default
    (root / "data" / "ptb" / "train.txt").write_text("a b\n")
    assert cli("data", "prepare", f"data.corpus={long_corpus}", f"data.cache_dir={root}")[0] == 0
    rc, out, _ = cli("data", "cache", "--cache-dir", root)
    assert rc == 0 and out.splitlines()[0].startswith(f"{root}: 4 cache entries (")
    assert sum(str(long_corpus / "train.txt") in line for line in out.splitlines()) == 2  # split and tokenizer
    rc, out, _ = cli("data", "cache", "--clear", "--cache-dir", root)
    assert rc == 0 and out.startswith(f"{root}: removed 4 cache entries (")
    assert cli("data", "cache", "--cache-dir", root)[1].startswith(f"{root}: 0 cache entries")
    assert (root / "data" / "ptb" / "train.txt").read_text() == "a b\n"
