"""Configuration of :class:`~textvae.models.TextVAEModel`."""

from __future__ import annotations

from typing import Literal, get_args

from transformers import PreTrainedConfig

NetworkType = Literal["lstm", "transformer", "pretrained"]
LatentPath = Literal["invlip", "concat", "memory", "none"]
InvlipLift = Literal["frozen", "learned", "plausible", "output", "output_whitened"]
Trainable = Literal["frozen", "lora", "full"]
Pooling = Literal["mean", "first"]
BackboneWeights = Literal["reference", "embedded"]


class TextVAEConfig(PreTrainedConfig):
    r"""Every hyper-parameter of a sentence VAE.

    Args:
        vocab_size: Size of the tokenizer's vocabulary.
        pad_token_id, bos_token_id, eos_token_id: Special token ids.
        unk_token_id: The id word dropout puts in place of a decoder input: ``<unk>``, or for a
            pretrained tokenizer without a distinct one the id
            :func:`textvae.data.tokenization.word_dropout_token_id` picks.
        embedding_size: Token embedding width (shared by encoder and decoder).
        hidden_size: LSTM hidden size, or Transformer model width.
        latent_size: Dimension d of z.
        encoder_type: ``lstm``, ``transformer`` or ``pretrained`` (any Hugging Face ``AutoModel``,
            ``encoder_name_or_path``, reading the sentence with its own tokenizer).
        encoder_layers: Number of encoder layers.
        encoder_bidirectional: Bidirectional LSTM encoder.
        decoder_type: ``lstm``, ``transformer`` (causal, SDPA attention) or ``pretrained`` (any
            Hugging Face ``AutoModelForCausalLM``, ``decoder_name_or_path``; its tokenizer defines
            the ids the VAE models).
        decoder_layers: Number of decoder layers.
        num_attention_heads: Heads of the Transformer encoder/decoder.
        intermediate_size: Feed-forward width of Transformer layers (default 4 * hidden).
        max_position_embeddings: Longest sequence the Transformer accepts.
        dropout_input: Dropout on decoder input embeddings.
        dropout_output: Dropout on decoder outputs before the output projection.
        tie_word_embeddings: Share the input embedding with the output projection.
        latent_path: How the decoder sees z: ``invlip`` (default; an inverse-Lipschitz map
            inside every decoder step), ``concat`` (Bowman et al. 2016 / He et al. 2019:
            z initialises the decoder and is appended to every input), ``memory`` (Optimus,
            Li et al. 2020, pretrained decoders only: z becomes one extra key/value per layer
            and is added to every input embedding) or ``none`` (a plain language model).
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
            ``output``: through the decoder's own output layer W: the map's output is added to
            the state h_t along orthonormal directions A (W's top right-singular directions),
            so the change reaches the logits as W A g; the lift W A is divided by
            sigma_min(center(W) A), which keeps the bound exactly s * L however W is trained.
            ``output_whitened``: the same directions, the lift W A whitened (centred singular
            values all s): every direction of the code moves the logits equally.
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
        decoder_name_or_path, encoder_name_or_path: A Hub id or a local directory of the
            pretrained backbone (``decoder_type`` / ``encoder_type`` ``pretrained``).
        decoder_gguf_file: A GGUF file inside ``decoder_name_or_path``, loaded through
            transformers' GGUF reader (de-quantised to float; needs the ``gguf`` package).
        decoder_trainable, encoder_trainable: What of a pretrained backbone trains: ``frozen``,
            ``lora`` (peft adapters) or ``full``. Own LSTM/Transformer parts always train
            (``full``); None picks ``frozen`` for a pretrained decoder and ``full`` otherwise.
        encoder_pooling: How a pretrained encoder's states become one vector: ``mean`` (masked
            mean) or ``first`` (the first token, e.g. BERT's [CLS]).
        lora_rank, lora_alpha, lora_dropout: The LoRA adapters' r, alpha and dropout.
        lora_target_modules: Module names the adapters wrap; None uses peft's default for the
            architecture.
        memory_slots: With ``memory``, how many key/value positions per layer z is written
            into (a prefix the LM attends to; keys and values are separate projections of z).
            Optimus uses 1; AdaVAE and LangVAE several, which lets each layer read several
            aspects of the code instead of one average. At most 256.
        memory_embeddings: With ``memory``, also add a projection of z to every input
            embedding (Optimus does both).
        decoder_weights, encoder_weights: How an export stores a pretrained backbone:
            ``reference`` (only the trained parts; the base is loaded from its
            ``*_name_or_path`` and checked against ``*_fingerprint``) or ``embedded`` (all its
            weights, LoRA merged). Set by textvae, not by recipes.
        decoder_config, encoder_config: The backbones' own configs (filled in when they are
            loaded), so an embedded export needs no download and a card can describe them.
        decoder_fingerprint, encoder_fingerprint: Digests of the base weights a reference
            export was trained on.
        decoder_license, encoder_license: The backbones' licences, for the model card.
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
        decoder_name_or_path: str | None = None,
        decoder_gguf_file: str | None = None,
        decoder_trainable: Trainable | None = None,
        encoder_name_or_path: str | None = None,
        encoder_trainable: Trainable | None = None,
        encoder_pooling: Pooling = "mean",
        lora_rank: int = 8,
        lora_alpha: float = 16.0,
        lora_dropout: float = 0.0,
        lora_target_modules: list[str] | None = None,
        memory_slots: int = 1,
        memory_embeddings: bool = True,
        decoder_weights: BackboneWeights = "reference",
        encoder_weights: BackboneWeights = "reference",
        decoder_config: dict | None = None,
        encoder_config: dict | None = None,
        decoder_fingerprint: str | None = None,
        encoder_fingerprint: str | None = None,
        decoder_license: str | None = None,
        encoder_license: str | None = None,
        **kwargs,
    ):
        if kwargs.pop("invlip_learn_lift", False):  # configs saved before invlip_lift existed
            invlip_lift = "learned"
        for name, value, allowed in (
            ("encoder_type", encoder_type, get_args(NetworkType)),
            ("decoder_type", decoder_type, get_args(NetworkType)),
            ("latent_path", latent_path, get_args(LatentPath)),
            ("invlip_lift", invlip_lift, get_args(InvlipLift)),
            ("encoder_pooling", encoder_pooling, get_args(Pooling)),
            ("decoder_weights", decoder_weights, get_args(BackboneWeights)),
            ("encoder_weights", encoder_weights, get_args(BackboneWeights)),
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
        decoder_trainable, encoder_trainable = _check_backbones(
            decoder_type, decoder_name_or_path, decoder_trainable, encoder_type, encoder_name_or_path,
            encoder_trainable, latent_path, invlip_condition_input, tie_word_embeddings)
        if lora_rank < 1 or not lora_alpha > 0 or not 0.0 <= lora_dropout < 1.0:
            raise ValueError(f"LoRA needs lora_rank >= 1, lora_alpha > 0 and lora_dropout in [0, 1), got "
                             f"{lora_rank}, {lora_alpha}, {lora_dropout}")
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
        self.decoder_name_or_path = decoder_name_or_path
        self.decoder_gguf_file = decoder_gguf_file
        self.decoder_trainable = decoder_trainable
        self.encoder_name_or_path = encoder_name_or_path
        self.encoder_trainable = encoder_trainable
        self.encoder_pooling = encoder_pooling
        self.lora_rank = lora_rank
        self.lora_alpha = float(lora_alpha)
        self.lora_dropout = float(lora_dropout)
        self.lora_target_modules = None if lora_target_modules is None else list(lora_target_modules)
        if not 1 <= memory_slots <= 256:
            raise ValueError(f"memory_slots must be in [1, 256], got {memory_slots}")
        self.memory_slots = int(memory_slots)
        self.memory_embeddings = memory_embeddings
        self.decoder_weights = decoder_weights
        self.encoder_weights = encoder_weights
        self.decoder_config = decoder_config
        self.encoder_config = encoder_config
        self.decoder_fingerprint = decoder_fingerprint
        self.encoder_fingerprint = encoder_fingerprint
        self.decoder_license = decoder_license
        self.encoder_license = encoder_license
        super().__init__(
            pad_token_id=pad_token_id,
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            tie_word_embeddings=tie_word_embeddings,
            **kwargs,
        )


def _check_backbones(decoder_type: str, decoder_path: str | None, decoder_trainable: str | None, encoder_type: str,
                     encoder_path: str | None, encoder_trainable: str | None, latent_path: str, condition_input: bool,
                     tie_word_embeddings: bool) -> tuple[str, str]:
    """The rules across the pretrained-backbone options; returns what trains of the decoder
    and of the encoder (None resolved: ``frozen`` for a pretrained decoder, else ``full``)."""
    allowed = get_args(Trainable)
    resolved = []
    for part, kind, path, trainable in (("decoder", decoder_type, decoder_path, decoder_trainable),
                                        ("encoder", encoder_type, encoder_path, encoder_trainable)):
        if kind == "pretrained" and not path:
            raise ValueError(f"{part}_type=pretrained needs {part}_name_or_path (a Hub id or a local directory)")
        if trainable is not None and trainable not in allowed:
            raise ValueError(f"{part}_trainable must be one of {allowed}, got {trainable!r}")
        if kind != "pretrained" and trainable not in (None, "full"):
            raise ValueError(f"{part}_trainable={trainable} applies to a pretrained {part}; "
                             f"an own {kind} {part} always trains in full")
        resolved.append(trainable or ("frozen" if part == "decoder" and kind == "pretrained" else "full"))
    pretrained = decoder_type == "pretrained"
    if latent_path == "memory" and not pretrained:
        raise ValueError("latent_path=memory (Optimus) prefills a pretrained decoder's key/value cache; "
                         "it needs decoder_type=pretrained")
    if pretrained and latent_path == "concat":
        raise ValueError("latent_path=concat is for the own LSTM/Transformer decoders; a pretrained decoder "
                         "takes invlip, memory or none")
    if pretrained and condition_input:
        raise ValueError("invlip_condition_input feeds z into an own decoder's inputs; with a pretrained "
                         "decoder use latent_path=memory for that")
    if pretrained and tie_word_embeddings:
        raise ValueError("tie_word_embeddings is the own decoders' option; a pretrained decoder keeps its own tying")
    return resolved[0], resolved[1]


def own_padding_idx(config: TextVAEConfig) -> int | None:
    """The embeddings' ``padding_idx`` for the own encoders and decoders: the pad id, unless a
    pretrained tokenizer pads with a token that is also read (EOS), whose row must train."""
    pad = config.pad_token_id
    return None if pad is None or pad in (config.bos_token_id, config.eos_token_id) else pad
