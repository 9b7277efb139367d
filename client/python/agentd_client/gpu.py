"""GPU discovery, selection, pinning and tags, as `agentctl worker --gpus` does them.

For a Python program that is its own worker (a `Worker` loop, or a persistent actor started
once per GPU) and needs what `agentctl worker --gpus` works out:

    from agentd_client import gpu

    gpus = gpu.select(gpu.discover(), "all")      # or "0,1", or [0, 1]
    tags = gpu.merge_tags(gpu.auto_tags(gpus), {"zone": "eu"})   # {"gpu": "H100", "gpu_mem_gib": "80", ...}
    gpu.pin(gpus[0])                              # before importing torch: CUDA_VISIBLE_DEVICES=...
    Worker(client, ["rollouts"], handle, tags=tags).run()

It asks `nvidia-smi --query-gpu=index,name,memory.total,uuid --format=csv,noheader,nounits`
and reads its answer with the same rules as `client/src/gpu.rs`: one `index, name, MiB, uuid`
line per GPU; the name is everything between the first and the last two fields (a name with a
comma parses); `[N/A]` memory means unknown; CRLF and blank lines are fine; anything else is
refused with its line number, because a worker that guesses its GPUs hands jobs to the wrong
device. Both implementations are tested against the same recorded answers and expected readings
(`client/tests/fixtures/nvidia-smi/cases.json`). Standard library only.
"""

import collections
import os
import re
import subprocess
import unicodedata

#: The query `discover` runs; `index` is what CUDA_VISIBLE_DEVICES takes once
#: CUDA_DEVICE_ORDER=PCI_BUS_ID makes CUDA number GPUs the way nvidia-smi does.
NVIDIA_SMI_ARGS = ("--query-gpu=index,name,memory.total,uuid", "--format=csv,noheader,nounits")
#: How long nvidia-smi may take (a wedged driver makes it hang), in seconds.
NVIDIA_SMI_TIMEOUT_S = 30.0
#: Most GPUs one worker drives.
GPUS_MAX = 64
#: Most bytes of nvidia-smi's answer read.
NVIDIA_SMI_OUTPUT_BYTES_MAX = 256 * 1024
#: Tag keys a GPU worker advertises.
GPU_TAG = "gpu"
GPU_MEM_TAG = "gpu_mem_gib"
GPU_COUNT_TAG = "gpu_count"

_VENDOR_WORDS = ("NVIDIA", "TESLA", "GEFORCE", "QUADRO")
_SERIES_WORDS = ("RTX", "GTX")
_SUFFIX_WORDS = ("TI", "SUPER")
_U32_MAX = 2 ** 32 - 1

#: One GPU as nvidia-smi lists it: `index` (int, PCI bus order), `name` (e.g. "NVIDIA H100 80GB
#: HBM3"), `memory_total_mib` (int, or None when the driver says [N/A]), `uuid` ("GPU-...").
GpuInfo = collections.namedtuple("GpuInfo", ["index", "name", "memory_total_mib", "uuid"])


class GpuError(Exception):
    """GPUs could not be discovered or selected. `kind` says why: `nvidia_smi_missing`,
    `nvidia_smi_failed`, `nvidia_smi_timed_out`, `parse`, `no_gpus`, `unknown_index`,
    `bad_selection` or `mixed_models`."""

    def __init__(self, kind, message):
        super().__init__(message)
        self.kind = kind


def _unsigned(text):
    """An unsigned integer the way Rust parses one (`+` allowed, nothing else), or None."""
    if not re.fullmatch(r"\+?[0-9]+", text):
        return None
    return int(text)


def _parse_memory_mib(text):
    """`memory.total` with `nounits` is MiB; `[N/A]` / `[Not Supported]` mean unknown."""
    if (text.startswith("[") and text.endswith("]")) or text.upper() == "N/A":
        return None
    # Without `nounits` nvidia-smi appends " MiB"; accept it rather than fail on a flag typo.
    number = text[:-3] if text.endswith("MiB") else text
    value = _unsigned(number.strip())
    if value is None:
        raise ValueError("memory.total {!r} is not a number of MiB".format(text))
    return value


def _malformed_uuid(uuid):
    return not uuid or any(ch.isspace() or unicodedata.category(ch) == "Cc" for ch in uuid)


def parse_query_gpu(text):
    """Parses nvidia-smi's answer to `NVIDIA_SMI_ARGS` into a list of `GpuInfo`; raises
    `GpuError` (kind `parse`) naming the first line that does not fit."""
    gpus = []
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line:
            continue

        def error(message):
            return GpuError("parse", "cannot read nvidia-smi's answer, line {}: {} (got {!r})".format(
                number, message, line[:200]))

        fields = [field.strip() for field in line.split(",")]
        if len(fields) < 4:
            raise error("expected `index, name, memory.total, uuid`")
        index = _unsigned(fields[0])
        if index is None or index > _U32_MAX:
            raise error("index is not a number")
        uuid = fields[-1]
        name = ", ".join(fields[1:-2])
        if not name:
            raise error("empty GPU name")
        if _malformed_uuid(uuid):
            raise error("malformed uuid")
        try:
            memory_total_mib = _parse_memory_mib(fields[-2])
        except ValueError as problem:
            raise error(str(problem))
        if any(gpu.index == index for gpu in gpus):
            raise error("index listed twice")
        if len(gpus) == GPUS_MAX:
            raise error("more than {} GPUs".format(GPUS_MAX))
        gpus.append(GpuInfo(index, name, memory_total_mib, uuid))
    return gpus


def model_tag(name):
    """A short, stable model name for the `gpu` tag: "NVIDIA H100 80GB HBM3" -> "H100",
    "NVIDIA A100-SXM4-40GB" -> "A100", "NVIDIA GeForce RTX 4090" -> "RTX4090", "Tesla T4" -> "T4".
    Split at every character that is not an ASCII letter or digit; vendor words and memory sizes
    are dropped; the first token with a digit is the model; names without one fall back to the
    remaining words joined by "-"."""
    tokens = [token.upper() for token in re.split(r"[^A-Za-z0-9]+", name) if token]
    tokens = [token for token in tokens if token not in _VENDOR_WORDS]

    def is_memory_size(token):
        return token.endswith("GB") and token[:-2].isdigit()

    for position, token in enumerate(tokens):
        if is_memory_size(token) or not any(ch.isdigit() for ch in token):
            continue
        model = ""
        # `RTX 4090` is one model; `RTX A6000` is the A6000.
        if position > 0 and tokens[position - 1] in _SERIES_WORDS and token.isdigit():
            model += tokens[position - 1]
        model += token
        if position + 1 < len(tokens) and tokens[position + 1] in _SUFFIX_WORDS:
            model += tokens[position + 1]
        return model
    if not tokens:
        return "unknown"
    return "-".join(tokens)[:64]


def memory_gib(memory_mib):
    """MiB to GiB, rounded to the nearest (81559 MiB, an H100's 80 GB, is 80)."""
    return (memory_mib + 512) // 1024


def parse_selection(selection):
    """`"all"` (any case), or indices: a string like "0,1,2" or a list of ints. Returns "all" or
    a list of ints (each once, in the order given); raises `GpuError` (kind `bad_selection`)."""
    if isinstance(selection, str):
        text = selection.strip()
        if text.lower() == "all":
            return "all"
        parts = [part.strip() for part in text.split(",")]
        indices = []
        for part in parts:
            index = _unsigned(part)
            if index is None or index > _U32_MAX:
                raise GpuError("bad_selection",
                               "expected `all` or GPU indices like 0,1,2, got {!r}".format(text))
            indices.append(index)
    else:
        indices = list(selection)
        for index in indices:
            if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index <= _U32_MAX:
                raise GpuError("bad_selection",
                               "expected GPU indices (whole numbers from 0), got {!r}".format(index))
    seen = set()
    for index in indices:
        if index in seen:
            raise GpuError("bad_selection", "GPU {} is listed twice".format(index))
        seen.add(index)
    if len(indices) > GPUS_MAX:
        raise GpuError("bad_selection", "at most {} GPUs per worker".format(GPUS_MAX))
    return indices


def describe(gpus):
    """`0: NVIDIA H100 80GB HBM3, 1: ...` for messages."""
    if not gpus:
        return "no GPUs"
    return ", ".join("{}: {}".format(gpu.index, gpu.name) for gpu in gpus)


def _no_gpus():
    return GpuError("no_gpus", "needs NVIDIA GPUs, but nvidia-smi lists none on this machine")


def select(gpus, selection="all"):
    """The selected GPUs, in the order asked for (`"all"`: nvidia-smi's order)."""
    if not gpus:
        raise _no_gpus()
    selection = parse_selection(selection)
    if selection == "all":
        return list(gpus)
    chosen = []
    for index in selection:
        found = [gpu for gpu in gpus if gpu.index == index]
        if not found:
            raise GpuError("unknown_index", "GPU {} does not exist; this machine has {}".format(
                index, describe(gpus)))
        chosen.append(found[0])
    return chosen


def auto_tags(selected):
    """Tags a worker driving `selected` advertises: `gpu` (the common model), `gpu_mem_gib` (of
    the smallest GPU, left out when any is unknown) and `gpu_count`, all strings. A mix of models
    is refused (kind `mixed_models`): a `gpu` tag true of only some GPUs sends jobs to the wrong
    one."""
    models = sorted({model_tag(gpu.name) for gpu in selected})
    if not models:
        raise _no_gpus()
    if len(models) > 1:
        raise GpuError("mixed_models", (
            "the selected GPUs are of different models ({}); run one worker per model (e.g. 0,1 "
            "and 2,3) so that the `gpu` tag is true of every GPU, or give the gpu tag yourself"
        ).format(", ".join(models)))
    tags = {GPU_TAG: models[0]}
    memories = [gpu.memory_total_mib for gpu in selected]
    if all(memory is not None for memory in memories):
        tags[GPU_MEM_TAG] = str(memory_gib(min(memories)))
    tags[GPU_COUNT_TAG] = str(len(selected))
    return tags


def merge_tags(auto, user):
    """Auto tags overlaid with the user's: the user wins on a conflict."""
    merged = dict(auto)
    merged.update(user or {})
    return merged


def pin_env(gpu):
    """The environment pinning a process to `gpu`, as `agentctl worker --gpus` sets it:
    CUDA_VISIBLE_DEVICES (the nvidia-smi index; indices rather than UUIDs because some
    frameworks parse it as integers), CUDA_DEVICE_ORDER=PCI_BUS_ID (so CUDA numbers GPUs as
    nvidia-smi does), and AGENTD_GPU_INDEX, AGENTD_GPU_UUID, AGENTD_GPU_NAME."""
    return {
        "CUDA_VISIBLE_DEVICES": str(gpu.index),
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
        "AGENTD_GPU_INDEX": str(gpu.index),
        "AGENTD_GPU_UUID": gpu.uuid,
        "AGENTD_GPU_NAME": gpu.name,
    }


def pin(gpu, environ=None):
    """Pins this process (or `environ`, e.g. a copy for a child) to `gpu`; returns the variables
    set. Call it before importing CUDA libraries: they read CUDA_VISIBLE_DEVICES once."""
    env = pin_env(gpu)
    (os.environ if environ is None else environ).update(env)
    return env


def discover(nvidia_smi=None, timeout_s=NVIDIA_SMI_TIMEOUT_S):
    """Runs nvidia-smi (`nvidia_smi`, else $AGENTD_NVIDIA_SMI, else `nvidia-smi` on PATH) and
    returns its GPUs. Raises `GpuError` with a message that says what to do when there is no
    driver, nvidia-smi fails or hangs, or it lists no GPU."""
    program = nvidia_smi or os.environ.get("AGENTD_NVIDIA_SMI") or "nvidia-smi"
    try:
        answer = subprocess.run([program] + list(NVIDIA_SMI_ARGS), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout_s)
    except OSError as error:
        raise GpuError("nvidia_smi_missing", (
            "needs NVIDIA GPUs, but {} was not found ({}); this machine has no NVIDIA driver "
            "installed or it is not on PATH (pass nvidia_smi= or set AGENTD_NVIDIA_SMI)"
        ).format(program, error))
    except subprocess.TimeoutExpired:
        raise GpuError("nvidia_smi_timed_out",
                       "`{}` did not answer within {:g} s (is the driver wedged?)".format(program, timeout_s))
    out = answer.stdout[:NVIDIA_SMI_OUTPUT_BYTES_MAX].decode("utf-8", "replace")
    err = answer.stderr[:NVIDIA_SMI_OUTPUT_BYTES_MAX].decode("utf-8", "replace")
    if answer.returncode != 0:
        # Driver errors go to stdout on some versions and to stderr on others: show both.
        both = "{} {}".format(out.strip(), err.strip()).strip() or "no output"
        raise GpuError("nvidia_smi_failed", "needs NVIDIA GPUs, but `{}` failed (exit status {}): {}".format(
            program, answer.returncode, both[:500]))
    gpus = parse_query_gpu(out)
    if not gpus:
        raise _no_gpus()
    return gpus
