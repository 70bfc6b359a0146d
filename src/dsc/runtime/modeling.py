"""Model, tokenizer and device handling shared by `dsc train` and `dsc eval`."""
from __future__ import annotations

import json
import logging
import os
import sys
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dsc.core.environment import flags_set
from dsc.core.errors import DscError, SpecError

log = logging.getLogger("dsc.runtime")


class ModelError(DscError):
    """The model cannot be found or loaded."""

    exit_code = 2


def progress_enabled() -> bool:
    """Progress bars: on a terminal, unless DSC_NO_PROGRESS is set (a log file gets lines instead)."""
    return not os.environ.get("DSC_NO_PROGRESS") and sys.stderr.isatty()


def log_lines_enabled() -> bool:
    """Off a terminal (a log file, CI), a line per logged step instead of a bar (DSC_NO_PROGRESS: none)."""
    return not os.environ.get("DSC_NO_PROGRESS") and not sys.stderr.isatty()


def quiet_libraries() -> None:
    """Without progress output (DSC_NO_PROGRESS), also silence transformers' loading bars."""
    if not progress_enabled():
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


@contextmanager
def peft_compat():
    """peft 0.21 probes the `is_gradient_checkpointing` property that transformers 5 deprecated;
    the FutureWarning is about the two libraries, not the user's run."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


WEIGHT_FILES = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.gguf")

OFFLINE_HELP = ("give a local directory: a saved model (config.json, tokenizer files and weights), or, to train "
                "from scratch, one with only config.json and tokenizer files (`make demo` uses "
                "examples/nat-miniature/tiny-llama); a model already in the Hugging Face cache loads with "
                "HF_HUB_OFFLINE=1")


def resolve_model_ref(ref: str) -> str:
    """A local directory (must exist) or a hub id (`org/name`) that is in the Hugging Face cache
    or on a hub this machine reaches. An id that is neither fails here, within seconds, naming
    the offline ways on (the hub client would otherwise retry for about a minute)."""
    p = Path(ref).expanduser()
    if p.exists():
        if not p.is_dir():
            raise ModelError(f"model '{ref}' is a file; give the model's directory")
        return str(p)
    looks_local = ref.startswith((".", "/", "~")) or ref.count("/") > 1 or "\\" in ref
    if looks_local:
        raise ModelError(f"model directory not found: {ref}")
    if _in_hub_cache(ref):
        return ref
    if flags_set("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        raise ModelError(f"model '{ref}' is not a local directory and not in the Hugging Face cache, and "
                         f"HF_HUB_OFFLINE is set: {OFFLINE_HELP}")
    _check_on_hub(ref)
    return ref



def _in_hub_cache(ref: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(ref, "config.json"), str)
    except Exception:  # noqa: BLE001 - not a valid repo id: not cached
        return False


def _check_on_hub(ref: str) -> None:
    """One request with a short timeout: a clear error now instead of the client's retries."""
    try:
        from huggingface_hub import HfApi
        from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError
    except ImportError:  # pragma: no cover - transformers depends on huggingface_hub
        return
    try:
        HfApi().model_info(ref, timeout=10)
    except GatedRepoError:
        return  # reachable; loading says what access it needs
    except RepositoryNotFoundError:
        raise ModelError(f"no model '{ref}' on the Hugging Face hub (or it is private: log in with "
                         f"`hf auth login`), and no such local directory") from None
    except Exception as e:  # noqa: BLE001 - the hub is unreachable: name the ways on
        raise ModelError(f"model '{ref}' is not a local directory and the Hugging Face hub cannot be reached "
                         f"({_first_line(e)}): {OFFLINE_HELP}") from None


def has_weights(path: str) -> bool:
    """Whether a local model directory holds weights (else it is a config to train from scratch)."""
    p = Path(path)
    return not p.is_dir() or any(next(p.glob(pattern), None) is not None for pattern in WEIGHT_FILES)


def load_tokenizer(ref: str):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(ref)
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot load the tokenizer of '{ref}': {_first_line(e)}") from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


@dataclass(frozen=True)
class Device:
    cuda: bool
    precision: str  # bf16 / fp16 / fp32

    @property
    def torch_dtype(self):
        import torch

        return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[self.precision]

    @property
    def name(self) -> str:
        return "cuda" if self.cuda else "cpu"


def pick_device(precision: str = "auto", device: str = "auto", quantization: str = "none") -> Device:
    """bf16 on GPUs that support it, fp32 on CPU; a GPU-only option on CPU is a usage error."""
    import torch

    cuda = device != "cpu" and torch.cuda.is_available()
    if not cuda:
        if precision in ("bf16", "fp16"):
            raise SpecError(f"precision '{precision}' needs a GPU and none is available "
                            "(use precision=auto or precision=fp32 on CPU)")
        if quantization != "none":
            raise SpecError(f"quantization '{quantization}' (bitsandbytes) needs a GPU and none is available")
        return Device(cuda=False, precision="fp32")
    if precision == "auto":
        precision = "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    elif precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise SpecError("precision 'bf16' is not supported by this GPU (use fp16 or fp32)")
    return Device(cuda=True, precision=precision)


def end_of_turn_ids(tokenizer: Any, markers: list[str]) -> tuple[list[int], list[str]]:
    """Token ids of the template's end-of-turn markers, and the markers that are not one token
    (those cannot be eos ids; generation stops on them as strings instead)."""
    ids: list[int] = []
    multi: list[str] = []
    unk = getattr(tokenizer, "unk_token_id", None)
    for marker in markers:
        # The build probes the end of turn as the text after an assistant message (e.g. " </s>"
        # for llama-2): the token is the marker without its surrounding whitespace.
        marker = marker.strip()
        if not marker:
            continue
        tid = tokenizer.convert_tokens_to_ids(marker)
        if tid is None or (tid == unk and marker != getattr(tokenizer, "unk_token", None)):
            encoded = tokenizer.encode(marker, add_special_tokens=False)
            if len(encoded) == 1:
                tid = encoded[0]
            else:
                multi.append(marker)
                continue
        if tid not in ids:
            ids.append(int(tid))
    return ids, multi


def eos_ids_for(tokenizer: Any, markers: list[str], existing: Any = None) -> list[int]:
    """The template's end-of-turn ids first, then the model's own eos ids (deduplicated)."""
    ids, multi = end_of_turn_ids(tokenizer, markers)
    if multi:
        log.warning("end-of-turn marker(s) %s are several tokens long: generation stops on them as strings",
                    ", ".join(repr(m) for m in multi))
    extra = existing if isinstance(existing, list) else [existing] if existing is not None else []
    if tokenizer.eos_token_id is not None:
        extra = [*extra, tokenizer.eos_token_id]
    for tid in extra:
        if tid is not None and int(tid) not in ids:
            ids.append(int(tid))
    return ids


def pin_template(tokenizer: Any, template_source: str, model_ref: str) -> bool:
    """Make the tokenizer carry the artifact's template; True (and a warning) when it had another."""
    own = getattr(tokenizer, "chat_template", None)
    differs = own is not None and own != template_source
    if differs:
        log.warning("the chat template of '%s' differs from the artifact's; using the artifact's template "
                    "(train and eval must render exactly as the data was rendered)", model_ref)
    tokenizer.chat_template = template_source
    return differs


def read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ModelError(f"{path}: unreadable JSON ({e})") from None
    return data if isinstance(data, dict) else None


def library_versions() -> dict[str, str]:
    import platform
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in ("dsc", "torch", "transformers", "peft", "datasets", "accelerate", "tokenizers"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out
