"""Configuration of :class:`~textvae.models.TextVAEModel`."""

from __future__ import annotations

import dataclasses
import inspect
import typing
from typing import Any, Literal, get_args

from transformers import PreTrainedConfig

from textvae.errors import TextVAEError
from textvae.schema import ANY, drop_retired, section

NetworkType = Literal["lstm", "transformer", "pretrained"]
LatentPath = Literal["invlip", "concat", "memory", "none"]
InvlipLift = Literal["frozen", "output_whitened"]
Trainable = Literal["frozen", "lora", "full"]
Pooling = Literal["mean", "first"]
BackboneWeights = Literal["reference", "embedded"]
MAX_LAYERS = 1024
"""Most layers of a network: their memory is counted before building, but building
10**9 layer modules one by one would take hours first."""


ABLATIONS = "benchmarks/latent/TABLE.md"
USE_A_KEPT_LIFT = "use frozen (the default) or output_whitened"
RETIRED: dict[str, tuple[object, str]] = {
    # option: (the value under which it changed nothing, why it went and what replaced it)
    "invlip_rotations": (0, f"it lost its ablation (MI 2.55 vs 2.91 without, {ABLATIONS}); z acts through "
                            "the lift alone: drop the key"),
    "invlip_outer_map": (False, f"it lost its ablation (MI 0.36, {ABLATIONS}); the logits pass through the one "
                                "inverse-Lipschitz map: drop the key"),
    "invlip_condition_input": (False, "it lost its ablation (KL 0.28 vs 3.02, benchmarks/README.md); z enters "
                                      "an own decoder's inputs with latent_path=concat, else only its head"),
    "invlip_top_k": (ANY, f"it was the k of the retired invlip_lift=plausible ({ABLATIONS}): drop the key"),
    "invlip_learn_lift": (False, f"it meant invlip_lift=learned, which lost its ablation (MI 0.22, {ABLATIONS}); "
                                 f"{USE_A_KEPT_LIFT}"),
}
"""The options of designs that lost their ablations (their rows stay in the tables, with the commit
that reruns them)."""
RETIRED_VALUES = {"invlip_lift": {
    "learned": f"it lost its ablation (MI 0.22 vs 2.90 frozen, {ABLATIONS}); {USE_A_KEPT_LIFT}",
    "plausible": f"it lost its ablation (MI 0.04, no active unit, {ABLATIONS}); {USE_A_KEPT_LIFT}",
    "output": "it lost to output_whitened on both decoders (benchmarks/ptb/RESULTS-output-lift.md, "
              f"benchmarks/pretrained/RESULTS-ptb.md); {USE_A_KEPT_LIFT}",
}}


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
        invlip_lift: The lift B from the map's output into logit space.
            ``frozen``: a random orthonormal basis of the whole vocabulary, fixed at init.
            ``output_whitened``: through the decoder's own output layer W: the map's output
            is added to the state h_t along orthonormal directions A (W's top right-singular
            directions), so the change reaches the logits as W A g, the lift W A whitened
            (centred singular values all s): every direction of the code moves the logits
            equally, however W is trained.
        invlip_state_in_lift: The map takes and returns ``[P h_t; z]`` (True, the first
            design: its lift has ``invlip_state_size + latent_size`` columns). False: the
            map returns only ``g(z; P h_t) = grad_z psi([P h_t; z]) + L z``, with the
            state as context of the convex network; the lift then has ``latent_size``
            columns, so the state can be wide.
        posterior_bn_gamma: BN-VAE (Zhu et al. 2020): batch-normalise the posterior mean with
            this fixed scale gamma, which bounds the batch-mean KL below by about
            ``latent_size * gamma**2 / 2`` nats. None (default) leaves mu as the encoder gives it.
        latent_logits: With ``concat`` or ``memory``, also add a linear map of z to every step's
            logits: a bag-of-words bias that says which words the sentence holds, so the
            decoder's state is left to order them (on PTB it lowered the validation
            reconstruction by 11.5 nats at 1,000 steps, benchmarks/ptb/AUTOENCODER.md).
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
        invlip_lift: InvlipLift = "frozen",
        invlip_state_in_lift: bool = True,
        posterior_bn_gamma: float | None = None,
        latent_logits: bool = False,
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
        # An earlier export records every option, the retired ones too.
        kept = drop_retired({**kwargs, "invlip_lift": invlip_lift}, RETIRED, RETIRED_VALUES,
                            lambda key: f"config key '{key}'")
        kwargs = {key: value for key, value in kwargs.items() if key in kept}
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
                 "icnn_hidden_size": icnn_hidden_size, "icnn_layers": icnn_layers, "vocab_size": vocab_size,
                 "max_position_embeddings": max_position_embeddings, "intermediate_size": intermediate_size or 1}
        for name, value in sizes.items():
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
            if name.endswith("_layers") and value > MAX_LAYERS:  # built one by one: 10**9 would take hours
                raise ValueError(f"{name} must be at most {MAX_LAYERS}, got {value}")
        for name, value in (("dropout_input", dropout_input), ("dropout_output", dropout_output)):
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {value}")
        if "transformer" in (encoder_type, decoder_type) and hidden_size % num_attention_heads:
            raise ValueError(f"hidden_size ({hidden_size}) must be a multiple of num_attention_heads ({num_attention_heads})")
        if not 0 <= lipschitz < float("inf"):  # NaN fails too
            raise ValueError(f"lipschitz must be a finite number >= 0, got {lipschitz}")
        if posterior_bn_gamma is not None and not 0 < posterior_bn_gamma < float("inf"):
            raise ValueError(f"posterior_bn_gamma must be > 0 (or None), got {posterior_bn_gamma}")
        decoder_trainable, encoder_trainable = _check_backbones(
            decoder_type, decoder_name_or_path, decoder_trainable, encoder_type, encoder_name_or_path,
            encoder_trainable, latent_path, tie_word_embeddings)
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
        self.invlip_lift = invlip_lift
        self.invlip_state_in_lift = invlip_state_in_lift
        self.posterior_bn_gamma = None if posterior_bn_gamma is None else float(posterior_bn_gamma)
        if latent_logits and latent_path not in ("concat", "memory"):
            raise ValueError(f"latent_logits adds z's own bias to the logits of the concat and memory paths; "
                             f"latent_path={latent_path} " + ("has no z" if latent_path == "none" else
                             "keeps its inverse-Lipschitz bound, which a linear term could cancel"))
        self.latent_logits = latent_logits
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
                     encoder_path: str | None, encoder_trainable: str | None, latent_path: str,
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
    if pretrained and tie_word_embeddings:
        raise ValueError("tie_word_embeddings is the own decoders' option; a pretrained decoder keeps its own tying")
    return resolved[0], resolved[1]


def own_padding_idx(config: TextVAEConfig) -> int | None:
    """The embeddings' ``padding_idx`` for the own encoders and decoders: the pad id, unless a
    pretrained tokenizer pads with a token that is also read (EOS), whose row must train."""
    pad = config.pad_token_id
    return None if pad is None or pad in (config.bos_token_id, config.eos_token_id) else pad


def _model_section() -> type:
    """The recipe's ``model:`` section: a typed, validated field for every keyword of
    :class:`TextVAEConfig`, with its type and default from the config's signature, so the
    config stays the one source of the model's options and their documentation."""
    hints = typing.get_type_hints(TextVAEConfig.__init__)
    parameters = inspect.signature(TextVAEConfig.__init__).parameters
    fields = [(name, hints[name], dataclasses.field(default=parameter.default))
              for name, parameter in parameters.items() if name not in ("self", "kwargs")]

    def to_config(self, **set_by_textvae: Any) -> TextVAEConfig:
        """The model this section describes (``set_by_textvae``: the tokenizer's vocabulary size and
        special ids): the one place a recipe becomes a :class:`TextVAEConfig`, whose own checks
        (ranges, the rules across options) are refused in one line."""
        try:
            return TextVAEConfig(**{**dataclasses.asdict(self), **set_by_textvae})
        except ValueError as exc:
            raise TextVAEError(f"recipe section 'model': {exc}") from None

    namespace = {"__doc__": "The architecture: the keyword arguments of :class:`TextVAEConfig`.",
                 "__module__": __name__, "RETIRED": RETIRED, "RETIRED_VALUES": RETIRED_VALUES,
                 "to_config": to_config}
    return section("model")(dataclasses.make_dataclass("ModelConfig", fields, namespace=namespace))


ModelConfig = _model_section()
