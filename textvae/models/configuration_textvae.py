"""Configuration of :class:`~textvae.models.TextVAEModel`."""

from __future__ import annotations

from typing import Literal, get_args

from transformers import PreTrainedConfig

NetworkType = Literal["lstm", "transformer"]
LatentPath = Literal["invlip", "concat", "none"]
InvlipLift = Literal["frozen", "learned", "plausible"]


class TextVAEConfig(PreTrainedConfig):
    r"""Every hyper-parameter of a sentence VAE.

    Args:
        vocab_size: Size of the tokenizer's vocabulary.
        pad_token_id, bos_token_id, eos_token_id, unk_token_id: Special token ids.
        embedding_size: Token embedding width (shared by encoder and decoder).
        hidden_size: LSTM hidden size, or Transformer model width.
        latent_size: Dimension d of z.
        encoder_type: ``lstm`` or ``transformer``.
        encoder_layers: Number of encoder layers.
        encoder_bidirectional: Bidirectional LSTM encoder.
        decoder_type: ``lstm`` or ``transformer`` (causal, SDPA attention).
        decoder_layers: Number of decoder layers.
        num_attention_heads: Heads of the Transformer encoder/decoder.
        intermediate_size: Feed-forward width of Transformer layers (default 4 * hidden).
        max_position_embeddings: Longest sequence the Transformer accepts.
        dropout_input: Dropout on decoder input embeddings.
        dropout_output: Dropout on decoder outputs before the output projection.
        tie_word_embeddings: Share the input embedding with the output projection.
        latent_path: How the decoder sees z: ``invlip`` (default; an inverse-Lipschitz map
            inside every decoder step), ``concat`` (Bowman et al. 2016 / He et al. 2019:
            z initialises the decoder and is appended to every input) or ``none`` (a plain
            language model).
        lipschitz: The constant L of the ``invlip`` path: for a fixed decoder state,
            ``||center(logits(z1)) - center(logits(z2))|| >= L * ||z1 - z2||``.
        invlip_state_size: How many features of the decoder state enter the map beside z.
        icnn_hidden_size: Width of the input-convex network psi.
        icnn_layers: Depth of psi.
        invlip_condition_input: Also feed z into the decoder inputs (as ``concat`` does).
            The guarantee then holds for a fixed decoder state rather than a fixed prefix.
        invlip_lift: The lift B from the map's output into logit space.
            ``frozen``: a random orthonormal basis of the whole vocabulary, fixed at init.
            ``learned``: the same, trained (it learns to aim z at tokens that are already
            impossible, where distinct logits give alike distributions).
            ``plausible``: per position, the basis is rebuilt on the ``invlip_top_k``
            tokens the z-free logits ``W h_t`` rank highest, from learned token rows
            orthonormalised there; the bound then holds for the centred log-probabilities
            of those k tokens, i.e. in distribution space.
        invlip_top_k: k of the ``plausible`` lift; at least (map outputs) + 1 and at most
            ``vocab_size``.
        invlip_state_in_lift: The map takes and returns ``[P h_t; z]`` (True, the first
            design: its lift has ``invlip_state_size + latent_size`` columns). False: the
            map returns only ``g(z; P h_t) = grad_z psi([P h_t; z]) + L z``, with the
            state as context of the convex network; the lift then has ``latent_size``
            columns, so the state can be wide and the ``plausible`` k small.
        invlip_rotations: With ``invlip_state_in_lift=False``: turn g by an orthogonal
            matrix built from the decoder state (this many Householder reflections), so z
            can act in a different direction at every position; 0 = none.
        invlip_outer_map: Pass the logits through a second Brenier map on the vocabulary
            (``grad psi_2(v) + v``, psi_2 an ICNN of the same width and depth), as LIDVAE's
            text decoder does (Wang et al. 2021); the bound is kept.
        posterior_bn_gamma: BN-VAE (Zhu et al. 2020): batch-normalise the posterior mean with
            this fixed scale gamma, which bounds the batch-mean KL below by about
            ``latent_size * gamma**2 / 2`` nats. None (default) leaves mu as the encoder gives it.
    """

    model_type = "textvae"

    def __init__(
        self,
        vocab_size: int = 1000,
        pad_token_id: int = 0,
        bos_token_id: int = 1,
        eos_token_id: int = 2,
        unk_token_id: int = 3,
        embedding_size: int = 64,
        hidden_size: int = 128,
        latent_size: int = 32,
        encoder_type: NetworkType = "lstm",
        encoder_layers: int = 1,
        encoder_bidirectional: bool = False,
        decoder_type: NetworkType = "lstm",
        decoder_layers: int = 1,
        num_attention_heads: int = 4,
        intermediate_size: int | None = None,
        max_position_embeddings: int = 512,
        dropout_input: float = 0.0,
        dropout_output: float = 0.0,
        tie_word_embeddings: bool = False,
        latent_path: LatentPath = "invlip",
        lipschitz: float = 1.0,
        invlip_state_size: int = 32,
        icnn_hidden_size: int = 128,
        icnn_layers: int = 2,
        invlip_condition_input: bool = False,
        invlip_lift: InvlipLift = "frozen",
        invlip_top_k: int = 64,
        invlip_state_in_lift: bool = True,
        invlip_rotations: int = 0,
        invlip_outer_map: bool = False,
        posterior_bn_gamma: float | None = None,
        **kwargs,
    ):
        if kwargs.pop("invlip_learn_lift", False):  # configs saved before invlip_lift existed
            invlip_lift = "learned"
        for name, value, allowed in (
            ("encoder_type", encoder_type, get_args(NetworkType)),
            ("decoder_type", decoder_type, get_args(NetworkType)),
            ("latent_path", latent_path, get_args(LatentPath)),
            ("invlip_lift", invlip_lift, get_args(InvlipLift)),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        sizes = {"embedding_size": embedding_size, "hidden_size": hidden_size, "latent_size": latent_size,
                 "encoder_layers": encoder_layers, "decoder_layers": decoder_layers,
                 "num_attention_heads": num_attention_heads, "invlip_state_size": invlip_state_size,
                 "icnn_hidden_size": icnn_hidden_size, "icnn_layers": icnn_layers}
        for name, value in sizes.items():
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        for name, value in (("dropout_input", dropout_input), ("dropout_output", dropout_output)):
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {value}")
        if "transformer" in (encoder_type, decoder_type) and hidden_size % num_attention_heads:
            raise ValueError(f"hidden_size ({hidden_size}) must be a multiple of num_attention_heads ({num_attention_heads})")
        if latent_path == "invlip" and invlip_lift == "plausible":
            needed = latent_size + (invlip_state_size if invlip_state_in_lift else 0) + 1
            if not needed <= invlip_top_k <= vocab_size:
                raise ValueError(f"invlip_top_k must be in [{needed}, vocab_size={vocab_size}] "
                                 f"(the map's outputs + 1 and up), got {invlip_top_k}")
        if invlip_rotations < 0 or (invlip_rotations and invlip_state_in_lift):
            raise ValueError(f"invlip_rotations must be >= 0 and needs invlip_state_in_lift=False, got {invlip_rotations}")
        if not 0 <= lipschitz < float("inf"):  # NaN fails too
            raise ValueError(f"lipschitz must be a finite number >= 0, got {lipschitz}")
        if posterior_bn_gamma is not None and not 0 < posterior_bn_gamma < float("inf"):
            raise ValueError(f"posterior_bn_gamma must be > 0 (or None), got {posterior_bn_gamma}")
        self.vocab_size = vocab_size
        self.unk_token_id = unk_token_id
        self.embedding_size = embedding_size
        self.hidden_size = hidden_size
        self.latent_size = latent_size
        self.encoder_type = encoder_type
        self.encoder_layers = encoder_layers
        self.encoder_bidirectional = encoder_bidirectional
        self.decoder_type = decoder_type
        self.decoder_layers = decoder_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size or 4 * hidden_size
        self.max_position_embeddings = max_position_embeddings
        self.dropout_input = dropout_input
        self.dropout_output = dropout_output
        self.latent_path = latent_path
        self.lipschitz = float(lipschitz)
        self.invlip_state_size = invlip_state_size
        self.icnn_hidden_size = icnn_hidden_size
        self.icnn_layers = icnn_layers
        self.invlip_condition_input = invlip_condition_input
        self.invlip_lift = invlip_lift
        self.invlip_top_k = invlip_top_k
        self.invlip_state_in_lift = invlip_state_in_lift
        self.invlip_rotations = invlip_rotations
        self.invlip_outer_map = invlip_outer_map
        self.posterior_bn_gamma = None if posterior_bn_gamma is None else float(posterior_bn_gamma)
        super().__init__(
            pad_token_id=pad_token_id,
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            tie_word_embeddings=tie_word_embeddings,
            **kwargs,
        )
