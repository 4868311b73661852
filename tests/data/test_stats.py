import numpy as np

from textvae.data.stats import corpus_stats, length_histogram


def test_counts_per_split_and_train_types(make_corpus):
    d = make_corpus(train="a b c\n\nb c d e\n\n", valid="a\n", test="x y\nz\n")
    stats = corpus_stats(d)
    assert [(s.name, s.lines, s.tokens, s.blank) for s in stats.splits] == [
        ("train", 2, 7, 2), ("valid", 1, 1, 0), ("test", 2, 3, 0)]
    assert stats.word_types == 5
    assert stats.lengths.tolist() == [3, 4]


def test_histogram_bins_cover_every_sentence():
    lengths = np.random.default_rng(0).integers(1, 50, size=1000)
    bins = length_histogram(lengths)
    assert sum(count for _, count in bins) == 1000
    assert len(bins) <= 12 and bins[0][0].startswith("1")


def test_histogram_puts_outliers_in_an_open_last_bin():
    lengths = np.array([3] * 200 + [4] * 200 + [5] * 200 + [500])
    bins = length_histogram(lengths, bins=4)
    assert bins == [("3", 200), ("4", 200), ("5", 200), ("6+", 1)]


def test_render_draws_bars_relative_to_the_largest_bin(make_corpus):
    d = make_corpus(train="a\n" * 10 + "a b\n" * 5)
    text = corpus_stats(d).render(bar_width=20)
    assert "        1        10  " + "#" * 20 in text
    assert "        2         5  " + "#" * 10 in text


def test_ptb_matches_the_published_counts(cli, ptb_dir):
    rc, out, _ = cli("data", "stats", ptb_dir)
    assert rc == 0
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[2:5]}
    assert rows == {"train": ["42,068", "887,521", "0"], "valid": ["3,370", "70,390", "0"],
                    "test": ["3,761", "78,669", "0"]}
    assert "word types (train): 9,999" in out


def test_a_hugging_face_dataset_column_is_counted(tmp_path, cli):
    import datasets

    datasets.disable_progress_bars()
    rows = {"train": ["the dog ran", "", "a cat"], "validation": ["the cat ran"], "test": ["a dog sat ."]}
    datasets.DatasetDict({s: datasets.Dataset.from_dict({"sentence": r}) for s, r in rows.items()}).save_to_disk(
        str(tmp_path / "hf"))
    stats = corpus_stats(tmp_path / "hf", text_column="sentence")
    assert [(s.name, s.lines, s.tokens, s.blank) for s in stats.splits] == [
        ("train", 2, 5, 1), ("valid", 1, 3, 0), ("test", 1, 4, 0)]
    assert stats.word_types == 5
    rc, out, _ = cli("data", "stats", tmp_path / "hf", "--text-column", "sentence")
    assert rc == 0 and "word types (train): 5" in out
