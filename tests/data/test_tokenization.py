import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from textvae.data.reading import read_lines
from textvae.data.synthetic import vocabulary
from textvae.data.tokenization import (
    KINDS,
    SPECIAL_TOKENS,
    UNK_ID,
    check_fits_corpus,
    load_meta,
    load_tokenizer,
    save_tokenizer,
    train_tokenizer,
    unk_rate,
)
from textvae.errors import TextVAEError

SYNTHETIC = Path(__file__).resolve().parents[2] / "data" / "synthetic"
LINES = read_lines(SYNTHETIC / "train.txt")[0][:3000]
WORDS = sorted(vocabulary())


@pytest.fixture(scope="module")
def word_tok():
    return train_tokenizer("word", LINES, vocab_size=1000)


@pytest.fixture(scope="module", params=KINDS)
def any_tok(request):
    return train_tokenizer(request.param, LINES, vocab_size=150)


def test_special_tokens_have_fixed_ids(any_tok):
    assert any_tok.convert_tokens_to_ids(list(SPECIAL_TOKENS)) == [0, 1, 2, 3]
    assert (any_tok.pad_token_id, any_tok.bos_token_id, any_tok.eos_token_id, any_tok.unk_token_id) == (0, 1, 2, 3)


def test_encoding_is_wrapped_in_bos_and_eos(word_tok):
    ids = word_tok("the dog")["input_ids"]
    assert ids == [1, word_tok.convert_tokens_to_ids("the"), word_tok.convert_tokens_to_ids("dog"), 2]


def test_batch_call_gives_right_padded_model_inputs(any_tok):
    batch = any_tok(["the dog saw a cat .", "she will not find the red boxes today ."],
                    padding=True, return_tensors="pt")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert ids.shape == mask.shape and ids.shape[0] == 2
    short = int(mask[0].sum())
    assert short < ids.shape[1]
    assert ids[0, short - 1] == 2 and (ids[0, short:] == 0).all() and (mask[0, short:] == 0).all()
    assert (ids[:, 0] == 1).all()


@settings(max_examples=50, deadline=None)
@given(st.lists(st.sampled_from(WORDS), min_size=1, max_size=20))
def test_word_level_round_trip_is_exact_in_vocabulary(word_tok, words):
    text = " ".join(words)
    assert word_tok.decode(word_tok(text)["input_ids"], skip_special_tokens=True) == text


@pytest.mark.parametrize("kind", ["bpe", "unigram"])
def test_subword_round_trip_on_training_text(kind):
    tok = train_tokenizer(kind, LINES, vocab_size=120)
    batch = tok(LINES[:200])["input_ids"]
    assert [tok.decode(ids, skip_special_tokens=True) for ids in batch] == LINES[:200]


def test_literal_unk_and_unseen_words_map_to_unk(word_tok):
    ids = word_tok("the <unk> zebra dog")["input_ids"]
    assert ids[2] == UNK_ID and ids[3] == UNK_ID and ids[4] != UNK_ID
    assert "<unk>" not in word_tok.get_vocab() or word_tok.get_vocab()["<unk>"] == UNK_ID


def test_vocab_size_and_min_frequency_cap_the_words():
    lines = ["a a a a b b b c c d", "<unk> <unk> <unk> <unk> <unk> e"]
    assert len(train_tokenizer("word", lines, vocab_size=2)) == 4 + 2  # "a", "b"
    tok = train_tokenizer("word", lines, vocab_size=100, min_frequency=2)
    assert set(tok.get_vocab()) == {*SPECIAL_TOKENS, "a", "b", "c"}
    assert tok("d e")["input_ids"] == [1, UNK_ID, UNK_ID, 2]


def test_lowercase_option():
    tok = train_tokenizer("word", ["The Dog"], vocab_size=10, lowercase=True)
    assert tok("THE dog")["input_ids"] == tok("the dog")["input_ids"] != [1, UNK_ID, UNK_ID, 2]


def test_unknown_kind_is_named():
    with pytest.raises(TextVAEError, match="data.tokenizer: unknown kind 'char'"):
        train_tokenizer("char", LINES, vocab_size=10)


def test_save_and_load_give_identical_ids(any_tok, tmp_path):
    save_tokenizer(any_tok, tmp_path / "tok", {"kind": "x", "corpus": "synthetic"})
    loaded = load_tokenizer(tmp_path / "tok")
    assert loaded(LINES[:100])["input_ids"] == any_tok(LINES[:100])["input_ids"]
    assert loaded.model_max_length == any_tok.model_max_length
    assert load_meta(tmp_path / "tok")["corpus"] == "synthetic"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tok"]


def test_save_replaces_an_existing_directory(word_tok, tmp_path):
    save_tokenizer(train_tokenizer("word", ["x y"], vocab_size=5), tmp_path / "tok", {"corpus": "old"})
    save_tokenizer(word_tok, tmp_path / "tok", {"corpus": "new"})
    assert load_meta(tmp_path / "tok") == {"corpus": "new"}
    assert len(load_tokenizer(tmp_path / "tok")) == len(word_tok)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tok"]


def test_failed_save_leaves_nothing_behind(word_tok, tmp_path, monkeypatch):
    def broken(directory, **kwargs):
        (Path(directory) / "tokenizer.json").write_text("{half")
        raise OSError("disk full")

    monkeypatch.setattr(word_tok, "save_pretrained", broken)
    with pytest.raises(TextVAEError, match=r"tok: cannot write \(disk full\)"):
        save_tokenizer(word_tok, tmp_path / "tok", {})
    assert list(tmp_path.iterdir()) == []


def test_load_errors_are_one_line(word_tok, tmp_path):
    with pytest.raises(TextVAEError, match="tokenizer directory not found"):
        load_tokenizer(tmp_path / "nope")
    (tmp_path / "plain").mkdir()
    with pytest.raises(TextVAEError, match="not a textvae tokenizer"):
        load_tokenizer(tmp_path / "plain")
    save_tokenizer(word_tok, tmp_path / "tok", {})
    (tmp_path / "tok" / "tokenizer.json").write_text("{not json")
    with pytest.raises(TextVAEError, match=r"tok: corrupt tokenizer \(") as info:
        load_tokenizer(tmp_path / "tok")
    assert "\n" not in str(info.value)
    (tmp_path / "tok" / "textvae_tokenizer.json").write_text("[1, 2")
    with pytest.raises(TextVAEError, match="corrupt tokenizer metadata"):
        load_tokenizer(tmp_path / "tok")


def test_unk_rate_ignores_literal_unk(word_tok):
    lines = ["the <unk> dog", "zebra giraffe dog"]
    ids = word_tok(lines)["input_ids"]
    assert unk_rate(ids, lines) == pytest.approx(2 / 6)


def test_tokenizer_from_another_corpus_is_rejected(word_tok):
    lines = ["colorless green ideas sleep furiously", "the dog sleeps"]  # 5 of 8 words unknown
    with pytest.raises(TextVAEError, match=r"data.tokenizer runs/tok was built on corpus 'synthetic' and maps 62.5% of the train tokens of 'poems'"):
        check_fits_corpus(word_tok(lines)["input_ids"], lines, "runs/tok", {"corpus": "synthetic"}, "poems")
    check_fits_corpus(word_tok(LINES)["input_ids"], LINES, "runs/tok", {"corpus": "synthetic"}, "synthetic")


def test_ptb_word_vocabulary_has_no_oov_on_valid_and_test(ptb_dir, tmp_path):
    train = read_lines(ptb_dir / "train.txt")[0]
    tok = train_tokenizer("word", train, vocab_size=10000)
    assert len(tok) == 10002  # 9,998 words + <pad> <bos> <eos> <unk>
    for split in ("valid", "test"):
        lines = read_lines(ptb_dir / f"{split}.txt")[0]
        ids = [enc.ids for enc in tok.backend_tokenizer.encode_batch(lines)]
        assert unk_rate(ids, lines) == 0.0
        assert sum(row.count(UNK_ID) for row in ids) == sum(line.split().count("<unk>") for line in lines)
    save_tokenizer(tok, tmp_path / "ptb", {"corpus": "ptb"})
    assert json.loads((tmp_path / "ptb" / "tokenizer.json").read_text())["model"]["vocab"]["<unk>"] == UNK_ID


def test_word_dropout_replaces_words_by_unk_or_else_a_blank_never_by_a_structural_token():
    from tests.helpers_backbones import _tokenizer
    from textvae.data.tokenization import word_dropout_token_id

    own = train_tokenizer("word", ["a b c"], vocab_size=8)
    assert word_dropout_token_id(own) == own.unk_token_id == 3
    gpt2_like = _tokenizer("gpt2", ["a", "b", "_"])  # its unknown token is its EOS
    assert word_dropout_token_id(gpt2_like) == gpt2_like.convert_tokens_to_ids("_")
    assert word_dropout_token_id(_tokenizer("gpt2", ["a", "b"])) is None
