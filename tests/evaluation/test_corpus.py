"""Known answers for :mod:`textvae.evaluation.corpus`: IW-NLL against quadrature, PPL counting,
exact NLL without a latent, and the invariances the protocol relies on."""

from __future__ import annotations

import copy
import hashlib
import math

import pytest
import torch

from tests.helpers_models import (  # noqa: F401
    save_export,
    tiny_model,
    use_latent,
    word_tokenizer,
)
from textvae.errors import TextVAEError
from textvae.estimators import standard_normal_log_density
from textvae.evaluation.corpus import (
    evaluate,
    format_markdown,
    importance_sampled_log_likelihood,
    own_code_gains,
    teacher_forced_predictions,
)
from textvae.models import TextVAEConfig, TextVAEModel
from textvae.padding import pad_ids

# Vocabulary of 6: <pad> <bos> <eos> <unk> and the words 4, 5; sentences of 0-3 words.
SENTENCES = [[1, 4, 2], [1, 5, 4, 2], [1, 4, 4, 5, 2], [1, 5, 5, 5, 2], [1, 2], [1, 5, 2]]
KS = (1, 10, 100, 1000, 5000)
CPU = torch.device("cpu")


def padded(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    batch = pad_ids(rows, 0)
    return batch["input_ids"], batch["attention_mask"]


def quadrature(model, ids, mask, points: int = 4001):
    """log p(x) = log int p(x|z) N(z; 0, 1) dz by the trapezoid rule on [-8, 8] (1-D z),
    plus the posterior mean and variance of z: (B,) each, float64."""
    grid = torch.linspace(-8.0, 8.0, points, dtype=torch.float64)
    weights = torch.full_like(grid, float(grid[1] - grid[0]))
    weights[[0, -1]] /= 2
    log_px_z = model.log_likelihood(ids, grid.float().view(1, -1, 1).expand(ids.shape[0], -1, 1), mask).double()
    log_joint = log_px_z + standard_normal_log_density(grid.view(-1, 1)) + weights.log()  # (B, G)
    log_px = torch.logsumexp(log_joint, dim=1)
    posterior = (log_joint - log_px.unsqueeze(1)).exp()
    mean = (posterior * grid).sum(1)
    return log_px, mean, (posterior * grid**2).sum(1) - mean**2


@torch.no_grad()
def one_dimensional_model(latent_path: str) -> tuple[TextVAEModel, torch.Tensor]:
    """A 1-D-latent model whose encoder is set to an imperfect proposal of the exact posterior.

    q(z|x) = N(m + sd/4, 1.5 sd^2) for the exact posterior mean m and sd (by quadrature):
    close enough for K = 5000 to reach 0.01 nats, far enough for K = 1 to be visibly off.
    The encoder's output layer is solved for by least squares (16 features, 6 sentences).
    """
    torch.manual_seed(0)
    config = TextVAEConfig(vocab_size=6, embedding_size=8, hidden_size=16, latent_size=1, latent_path=latent_path,
                           lipschitz=3.0, invlip_state_size=4, icnn_hidden_size=8)
    model = TextVAEModel(config).eval()
    if latent_path == "concat":  # make p(x|z) depend on z enough to move the posterior
        model.decoder.init_state.weight.mul_(10)
        model.head.output.weight.mul_(100)
    ids, mask = padded(SENTENCES)
    log_px, mean, var = quadrature(model, ids, mask)
    coarse, _, _ = quadrature(model, ids, mask, points=2001)
    assert torch.allclose(coarse, log_px, atol=1e-6), "the quadrature reference is not converged"
    targets = torch.stack([mean + 0.25 * var.sqrt(), (1.5 * var).log()], dim=1)
    features = torch.cat([model.posterior.encoder(ids, mask), torch.ones(len(SENTENCES), 1)], dim=1).double()
    solution = torch.linalg.lstsq(features, targets).solution  # (H + 1, 2)
    model.posterior.to_params.weight.copy_(solution[:-1].T)
    model.posterior.to_params.bias.copy_(solution[-1])
    mu, logvar = model.encode_ids(ids, mask)
    assert torch.allclose(torch.cat([mu, logvar], 1).double(), targets, atol=1e-4)
    return model, log_px


@pytest.mark.parametrize("latent_path", ["invlip", "concat"])
def test_iw_nll_converges_to_the_quadrature_log_likelihood_as_k_grows(latent_path):
    model, exact = one_dimensional_model(latent_path)
    ids, mask = padded(SENTENCES)
    mu, logvar = model.encode_ids(ids, mask)
    errors = []
    for k in KS:
        iw, _ = importance_sampled_log_likelihood(model, ids, mask, mu, logvar, k, 500, torch.Generator().manual_seed(0))
        errors.append(float((iw - exact).abs().max()))
    assert errors[0] > 0.1, f"K=1 should be visibly off, errors {errors}"
    for fewer, more in zip(errors, errors[1:], strict=False):
        assert more <= fewer + 0.005, f"error grew with K: {dict(zip(KS, errors, strict=True))}"
    assert errors[-1] < 0.01, f"K=5000 is {errors[-1]:.4f} nats from quadrature"
    # The same through the corpus-level entry point.
    results = evaluate(model, SENTENCES, iw_samples=5000, bleu=False, progress=False, sample_chunk=1000)
    assert results["nll_iw"] == pytest.approx(-float(exact.mean()), abs=0.01)


def test_iw_nll_is_at_most_the_elbo_bound_and_at_least_the_exact_nll():
    model, exact = one_dimensional_model("invlip")
    results = evaluate(model, SENTENCES, iw_samples=1000, bleu=False, progress=False)
    assert results["nll_iw"] <= results["nll_elbo"]
    assert results["nll_iw"] >= -float(exact.mean()) - 0.01
    assert results["nll_elbo"] - results["nll_iw"] > 0.01  # q is imperfect, so the ELBO is loose


@torch.no_grad()
def test_perplexity_counts_words_and_eos_but_not_bos():
    # A language model that always predicts EOS with probability 1/2 and every other
    # token with 1/(2 (V - 1)), so every sentence's log-likelihood is known by hand.
    vocab = 8
    model = TextVAEModel(TextVAEConfig(vocab_size=vocab, latent_path="none", embedding_size=8, hidden_size=8)).eval()
    model.head.output.weight.zero_()
    model.head.output.bias.zero_()
    model.head.output.bias[2] = math.log(vocab - 1)
    sentences = [[1, 4, 2], [1, 5, 6, 2], [1, 7, 4, 5, 2]]  # 1, 2 and 3 words
    results = evaluate(model, sentences, iw_samples=10, bleu=False, progress=False)
    total_nll = 6 * math.log(2 * (vocab - 1)) + 3 * math.log(2)  # 6 words, 3 EOS
    assert results["protocol"]["num_predicted_tokens"] == 9
    assert results["nll_iw"] == pytest.approx(total_nll / 3)
    assert results["ppl_iw"] == pytest.approx(math.exp(total_nll / 9))
    assert results["ppl_elbo"] == pytest.approx(math.exp(total_nll / 9))


@torch.no_grad()
@pytest.mark.parametrize("k", [1, 7, 50])
def test_a_latent_free_model_reports_its_exact_nll_whatever_k(k):
    tok = word_tokenizer()
    model = tiny_model(tok, latent_path="none")
    sentences = tok(["the dog saw a cat .", "they will not find the red boxes ."])["input_ids"]
    ids, mask = padded(sentences)
    exact = -model.log_likelihood(ids, torch.zeros(2, model.config.latent_size), mask).double().mean()
    results = evaluate(model, sentences, iw_samples=k, bleu=False, progress=False)
    assert results["nll_iw"] == pytest.approx(float(exact), rel=1e-9)
    assert results["nll_elbo"] == pytest.approx(float(exact), rel=1e-9)
    assert (results["kl"], results["mi"], results["mi_batch"], results["active_units"]) == (0.0, 0.0, 0.0, 0)
    assert results["protocol"]["iw_samples_used"] == 1


@torch.no_grad()
def test_iw_estimate_does_not_depend_on_the_sample_chunk_size():
    model, _ = one_dimensional_model("invlip")
    ids, mask = padded(SENTENCES)
    mu, logvar = model.encode_ids(ids, mask)
    runs = [importance_sampled_log_likelihood(model, ids, mask, mu, logvar, 64, chunk, torch.Generator().manual_seed(3))
            for chunk in (7, 64)]
    assert torch.allclose(runs[0][0], runs[1][0], rtol=0, atol=1e-9)
    assert torch.allclose(runs[0][1], runs[1][1], rtol=0, atol=1e-9)


@pytest.fixture(scope="module")
def used_model():
    tok = word_tokenizer()
    lines = ["the dog saw a cat .", "they will not find the red boxes .", "he likes an apple .",
             "the old farmers did not carry the heavy books near the river quickly .", "she met a king ."]
    return use_latent(tiny_model(tok), lines), tok(lines)["input_ids"]


def test_padding_and_batching_do_not_change_the_deterministic_metrics(used_model):
    model, sentences = used_model
    one = evaluate(model, sentences, iw_samples=3, batch_size=1, progress=False)
    all_ = evaluate(model, sentences, iw_samples=3, batch_size=64, progress=False)
    for key in ("token_accuracy_teacher_forced", "bleu_greedy", "exact_match_greedy", "active_units"):
        assert one[key] == all_[key], key
    assert one["kl"] == pytest.approx(all_["kl"], rel=1e-5)  # float32 encoder, other batch shapes


@torch.no_grad()
def test_teacher_forced_accuracy_counts_predicted_tokens_only(used_model):
    model, sentences = used_model
    correct = total = 0
    for row in sentences:  # one unpadded sentence at a time: no pad can leak in
        ids = torch.tensor([row])
        mu, _ = model.encode_ids(ids, torch.ones_like(ids))
        predicted = teacher_forced_predictions(model, ids, mu)
        correct += int((predicted == ids[:, 1:]).sum())
        total += len(row) - 1
    results = evaluate(model, sentences, iw_samples=2, bleu=False, progress=False)
    assert results["protocol"]["num_predicted_tokens"] == total
    assert results["token_accuracy_teacher_forced"] == pytest.approx(correct / total)


def test_same_seed_same_numbers_other_seed_other_samples(used_model):
    model, sentences = used_model
    a, b, c = (evaluate(model, sentences, iw_samples=4, bleu=False, progress=False, seed=s) for s in (0, 0, 1))
    assert a["nll_iw"] == b["nll_iw"] and a["mi_split"] == b["mi_split"]
    assert a["nll_iw"] != c["nll_iw"]


def test_results_carry_protocol_and_checkpoint_identity(used_model, tmp_path):
    model, sentences = used_model
    save_export(model, tmp_path / "export")
    loaded = TextVAEModel.from_pretrained(tmp_path / "export").eval()
    results = evaluate(loaded, sentences, iw_samples=5, delta=0.02, progress=False)
    protocol = results["protocol"]
    assert (protocol["iw_samples"], protocol["active_units_delta"], protocol["seed"]) == (5, 0.02, 0)
    assert protocol["num_sentences"] == len(sentences)
    assert {"nll_iw", "mi_split", "mi_batch", "bleu_greedy"} <= protocol.keys()
    checkpoint = results["checkpoint"]
    digest = hashlib.sha256((tmp_path / "export" / "model.safetensors").read_bytes()).hexdigest()
    assert checkpoint["model_safetensors_sha256"] == digest
    assert checkpoint["config"]["latent_path"] == "invlip"
    assert checkpoint["config"]["latent_size"] == 4
    assert len(results["kl_per_dim"]) == 4
    assert sum(results["kl_per_dim"]) == pytest.approx(results["kl"], rel=1e-6)
    assert results["mi"] == results["mi_split"]


def test_factors_add_probes_of_every_factor_and_the_length(used_model):
    model, sentences = used_model
    factors = [{"tense": t, "negation": n} for t, n in
               [("past", False), ("future", True), ("present", False), ("past", True), ("past", False)]]
    results = evaluate(model, sentences, iw_samples=2, bleu=False, progress=False, factors=factors)
    assert set(results["probes"]) == {"tense", "negation", "length"}


def test_ids_without_bos_and_eos_are_a_user_error(used_model):
    model, _ = used_model
    with pytest.raises(TextVAEError, match="sentence 1 is not '<bos> ... <eos>'"):
        evaluate(model, [[1, 5, 2], [5, 6]], progress=False)
    with pytest.raises(TextVAEError, match="mi: must be one of"):
        evaluate(model, [[1, 5, 2]], mi="both", progress=False)


def test_markdown_report_is_a_single_table_with_every_headline_number(used_model):
    model, sentences = used_model
    results = evaluate(model, sentences, iw_samples=3, progress=False)
    table = format_markdown(results)
    lines = table.splitlines()
    assert all(line.startswith("|") and line.endswith("|") for line in lines)
    assert len({line.count(" | ") for line in lines}) == 1  # same number of columns on every row
    for label in ("PPL from IW-NLL", "PPL from the ELBO", "MI, whole-split", "MI, mini-batch", "Active units",
                  "Token accuracy (teacher-forced", "BLEU"):
        assert label in table
    assert f"{results['ppl_iw']:.4g}" in table


@torch.no_grad()
def test_identical_narrow_posteriors_pay_kl_without_mi_and_evaluate_warns(used_model):
    """Collapse in disguise: q(z|x) = N(0, e^-6) for every sentence -- KL ~ 10 nats, MI 0."""
    model, sentences = copy.deepcopy(used_model[0]), used_model[1]
    layer = model.posterior.to_params
    d = model.config.latent_size
    layer.weight.zero_()
    layer.bias[:d], layer.bias[d:] = 0.0, -6.0
    results = evaluate(model, sentences, iw_samples=4, bleu=False, progress=False)
    assert results["kl"] > 9 and results["mi_split"] < 0.05 and results["active_units"] == 0
    assert len(results["warnings"]) == 1 and results["warnings"][0].startswith("no active unit")
    assert results["own_code_gain"] == 0.0 and results["kl_minus_mi"] > 9  # one code for all: nothing read


def test_an_informative_code_is_not_warned_and_moves_predictions_more_under_the_prior(used_model):
    model, sentences = used_model
    results = evaluate(model, sentences, iw_samples=4, bleu=False, progress=False)
    assert results["warnings"] == []
    assert 0.0 <= results["next_token_tv_posterior"] < results["next_token_tv_prior"] <= 1.0


def test_a_language_model_reports_no_next_token_tv_and_no_warning():
    model = TextVAEModel(TextVAEConfig(vocab_size=6, embedding_size=8, hidden_size=16, latent_path="none")).eval()
    results = evaluate(model, SENTENCES, iw_samples=4, bleu=False, progress=False)
    assert "next_token_tv_posterior" not in results and results["warnings"] == []


class QuadraticDecoder:
    """log p(x | z) = -(z_0 - x_1)^2: a decoder whose reading of the code is known in closed form."""

    def log_likelihood(self, input_ids, z, mask):
        return -(z[..., 0] - input_ids[:, 1:2].double()) ** 2


def test_own_code_gain_compares_each_sentence_with_the_previous_sentences_code():
    ids = torch.tensor([[1, 4, 2], [1, 7, 2], [1, 5, 2]])
    mu = torch.tensor([[4.0], [6.0], [5.5]], dtype=torch.float64)
    gains = own_code_gains(QuadraticDecoder(), ids, torch.ones_like(ids), mu)
    # own: -(0)^2, -(1)^2, -(0.5)^2; other (previous row, the first wraps to the last): -(1.5)^2, -(3)^2, -(1)^2
    assert gains.tolist() == pytest.approx([2.25, 8.0, 0.75])
    assert torch.isnan(own_code_gains(QuadraticDecoder(), ids[:1], torch.ones_like(ids[:1]), mu[:1])).all()


def test_an_informative_code_gains_nats_the_mi_ceiling_is_log_n_and_saturation_is_said(used_model):
    model, sentences = used_model
    results = evaluate(model, sentences, iw_samples=4, bleu=False, progress=False)
    assert results["own_code_gain"] > 0.1
    assert results["mi_ceiling"] == pytest.approx(math.log(len(sentences)))
    assert results["mi_saturated"] == (results["mi_split"] >= math.log(len(sentences)) - 1)
    assert "MI ceiling log N" in format_markdown(results) and "Own-code gain" in format_markdown(results)
