"""Loading CLIP and its two towers' forward passes on device tensors: the only module that knows the model's
internals."""

import hashlib
import logging
import os
import pickle
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import clip
import torch
from clip.model import CLIP, build_model, convert_weights

from .preprocess import ModelInput

log = logging.getLogger(__name__)


def resolve_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but torch sees no CUDA device")
    return torch.device(requested)


def resolve_dtype(precision: str, device: torch.device) -> torch.dtype:
    if precision == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return {"fp16": torch.float16, "fp32": torch.float32}[precision]


def _file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@contextmanager
def _jit_load_unwarned() -> Iterator[None]:
    """OpenAI ships CLIP as TorchScript, which only torch.jit.load reads (clip.load included), and torch warns
    that it is deprecated at every start: a line in the log for what no one can change."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "`torch.jit.load` is deprecated", FutureWarning)
        yield


def _reason(error: Exception) -> str:
    """Why torch or CLIP could not read a file as a model, in a few words."""
    if isinstance(error, pickle.UnpicklingError):  # torch's text advises loading it with weights_only off
        return "neither a TorchScript archive nor a state dict of tensors"
    return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"


def _read_checkpoint(path: str) -> CLIP:
    """A TorchScript archive as OpenAI ships, or a plain state dict; `clip.load(path)` fails on the latter.
    ValueError naming the file when it is neither, or not CLIP's (the start then ends with that one line)."""
    try:
        try:
            with _jit_load_unwarned():
                state_dict = torch.jit.load(path, map_location="cpu").state_dict()
        except RuntimeError:
            state_dict = torch.load(path, map_location="cpu")
        return build_model(state_dict)
    except Exception as error:  # torch and CLIP raise many kinds for a file they cannot read as a model
        raise ValueError(
            f"--model {path}: not a CLIP checkpoint that this service can read ({_reason(error)})"
        ) from None


def _load_clip(spec: str, cache_dir: str) -> tuple[CLIP, str]:
    """The model on the CPU and the name that stamps its vectors."""
    if spec in clip.available_models():
        try:
            with _jit_load_unwarned():
                model, _ = clip.load(spec, device="cpu", jit=False, download_root=cache_dir or None)
        except (OSError, RuntimeError) as error:  # no network, or a download that came in damaged
            raise OSError(
                f"cannot download {spec} ({error}); offline, pass --model PATH to a checkpoint file, such as "
                "one that `python -m encoder_service.checkpoints random-vit-b32 vit.pt` makes"
            ) from None
        return model, spec
    if not os.path.isfile(spec):
        raise FileNotFoundError(
            f"--model {spec!r} is neither a checkpoint file nor one of {clip.available_models()}"
        )
    return _read_checkpoint(spec), f"{os.path.basename(spec)}@sha256:{_file_sha256(spec)[:16]}"


class ClipModel:
    """CLIP on one device, by default fp16 on CUDA and fp32 on the CPU.

    The forward passes take and give device tensors and never wait for the host, so that they can be captured
    as CUDA graphs (graphs.py); moving inputs and vectors between host and device is the caller's.
    """

    def __init__(self, spec: str, device: str = "auto", cache_dir: str = "", precision: str = "auto") -> None:
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(precision, self.device)
        model, self.name = _load_clip(spec, cache_dir)
        model = model.float().to(self.device).eval()
        if self.dtype == torch.float16:
            # OpenAI's own fp16 layout: matrices in fp16, LayerNorms and embeddings kept in fp32 (CLIP's
            # LayerNorm computes in fp32 and fails on fp16 weights).
            convert_weights(model)
        self.model = model
        self.dimension = int(model.text_projection.shape[1])
        self.image_resolution = int(model.visual.input_resolution)
        self.context_length = int(model.context_length)
        self._model_input = ModelInput(self.image_resolution, self.device, self.dtype)
        self._causal_mask = model.build_attention_mask().to(device=self.device, dtype=self.dtype)
        log.info("loaded %s on %s as %s", self.name, self.device, self.dtype)

    @torch.inference_mode()
    def image_vectors(self, pixels: torch.Tensor) -> torch.Tensor:
        """(n, res, res, 3) uint8 pixels on the device -> (n, dim) unit float32 vectors there."""
        return _normalised(self.model.encode_image(self._model_input(pixels)))

    @torch.inference_mode()
    def text_vectors(self, tokens: torch.Tensor) -> torch.Tensor:
        """(n, L) tokens on the device -> (n, dim) unit float32 vectors there, for any L that holds every
        text's end-of-text token.

        The text tower is causal and reads its output at the end-of-text token, so running it on the first L
        positions only (L = the longest text in the batch) gives the same vectors as all 77, for a fraction
        of the work; positions past a text's end change nothing.
        """
        length = tokens.shape[1]
        model = self.model
        end_positions = tokens.argmax(dim=-1)  # the end-of-text token has the largest id
        mask = self._causal_mask[:length, :length]
        # Embeddings stay fp32 in OpenAI's fp16 layout; the blocks take the model's dtype.
        positions = model.positional_embedding[:length].type(self.dtype)
        x = model.token_embedding(tokens).type(self.dtype) + positions
        x = x.permute(1, 0, 2)  # (length, n, width), as CLIP's blocks expect
        for block in model.transformer.resblocks:
            normed = block.ln_1(x)
            x = x + block.attn(normed, normed, normed, need_weights=False, attn_mask=mask)[0]
            x = x + block.mlp(block.ln_2(x))
        x = model.ln_final(x.permute(1, 0, 2))
        return _normalised(
            x[torch.arange(x.shape[0], device=x.device), end_positions] @ model.text_projection
        )


def _normalised(features: torch.Tensor) -> torch.Tensor:
    features = features.float()
    return features / features.norm(dim=-1, keepdim=True)
