//! GPU discovery for `agentctl worker --gpus`: asks `nvidia-smi` which GPUs the box has, picks
//! the selected ones, gives each its own worker slot (with `CUDA_VISIBLE_DEVICES` pointing at
//! it) and derives the tags the worker advertises (`gpu=H100`, `gpu_mem_gib=80`), so that jobs
//! can require a kind of GPU without anyone typing tags by hand.
//!
//! Parsing is separate from running `nvidia-smi` so that it is tested on recorded outputs
//! (`client/tests/gpu_discovery.rs`); this module never talks to the daemon.

use crate::worker::Slot;
use agentd_schemas::events::Tags;
use std::collections::BTreeSet;
use std::time::Duration;

/// The query `agentctl worker --gpus` runs. `index` is what `CUDA_VISIBLE_DEVICES` takes once
/// `CUDA_DEVICE_ORDER=PCI_BUS_ID` makes CUDA number GPUs the way nvidia-smi does.
pub const NVIDIA_SMI_ARGS: [&str; 2] = [
    "--query-gpu=index,name,memory.total,uuid",
    "--format=csv,noheader,nounits",
];

/// How long nvidia-smi may take; a wedged driver makes it hang, and a worker that hangs at start
/// without saying why is worse than one that stops with a message.
pub const NVIDIA_SMI_TIMEOUT: Duration = Duration::from_secs(30);
/// Most GPUs one worker drives (a limit on slots; the biggest boxes have 16).
pub const GPUS_MAX: usize = 64;
/// Most bytes of nvidia-smi output read; its answer for 64 GPUs is a few KiB.
pub const NVIDIA_SMI_OUTPUT_BYTES_MAX: usize = 256 * 1024;
/// Tag key for the short model name (`H100`).
pub const GPU_TAG: &str = "gpu";
/// Tag key for the memory of the smallest selected GPU, in GiB, rounded.
pub const GPU_MEM_TAG: &str = "gpu_mem_gib";
/// Tag key for the number of GPUs this worker drives (one per slot).
pub const GPU_COUNT_TAG: &str = "gpu_count";

/// One GPU as nvidia-smi lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GpuInfo {
    /// nvidia-smi's index (PCI bus order).
    pub index: u32,
    /// Marketing name, e.g. `NVIDIA H100 80GB HBM3`.
    pub name: String,
    /// Total memory in MiB; `None` when the driver reports `[N/A]` (some MIG and vGPU setups).
    pub memory_total_mib: Option<u64>,
    /// `GPU-…` identifier, stable across reboots and re-cabling.
    pub uuid: String,
}

/// Which GPUs `--gpus` selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GpuSelection {
    /// Every GPU nvidia-smi lists.
    All,
    /// These nvidia-smi indices, in the order given (each once).
    Indices(Vec<u32>),
}

/// Why GPUs could not be discovered or selected.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error("--gpus needs NVIDIA GPUs, but {program} was not found ({reason}); this machine has no NVIDIA driver installed or it is not on PATH (pass --nvidia-smi PATH), or run the worker without --gpus")]
    NvidiaSmiMissing { program: String, reason: String },
    #[error("--gpus needs NVIDIA GPUs, but `{program}` failed ({status}): {output}")]
    NvidiaSmiFailed {
        program: String,
        status: String,
        output: String,
    },
    #[error("--gpus: `{program}` did not answer within {} s (is the driver wedged?)", NVIDIA_SMI_TIMEOUT.as_secs())]
    NvidiaSmiTimedOut { program: String },
    #[error("--gpus: cannot read nvidia-smi's answer, line {line}: {message} (got {text:?})")]
    Parse {
        line: usize,
        message: String,
        text: String,
    },
    #[error("--gpus needs NVIDIA GPUs, but nvidia-smi lists none on this machine")]
    NoGpus,
    #[error("--gpus: GPU {index} does not exist; this machine has {available}")]
    UnknownIndex { index: u32, available: String },
    #[error("--gpus: {0}")]
    BadSelection(String),
    #[error("--gpus: the selected GPUs are of different models ({models}); run one worker per model (e.g. --gpus 0,1 and --gpus 2,3) so that the `gpu` tag is true of every slot, or pass --tag gpu=... to override")]
    MixedModels { models: String },
}

impl std::str::FromStr for GpuSelection {
    type Err = GpuError;

    /// `all`, or a comma-separated list of indices such as `0,1,2`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("all") {
            return Ok(GpuSelection::All);
        }
        let mut seen = BTreeSet::new();
        let mut indices = Vec::new();
        for part in text.split(',') {
            let part = part.trim();
            let index: u32 = part.parse().map_err(|_| {
                GpuError::BadSelection(format!(
                    "expected `all` or GPU indices like 0,1,2, got {text:?}"
                ))
            })?;
            if !seen.insert(index) {
                return Err(GpuError::BadSelection(format!(
                    "GPU {index} is listed twice"
                )));
            }
            indices.push(index);
        }
        if indices.len() > GPUS_MAX {
            return Err(GpuError::BadSelection(format!(
                "at most {GPUS_MAX} GPUs per worker"
            )));
        }
        Ok(GpuSelection::Indices(indices))
    }
}

/// Parses the output of `nvidia-smi --query-gpu=index,name,memory.total,uuid
/// --format=csv,noheader,nounits`: one `index, name, memory, uuid` line per GPU.
///
/// The name is everything between the first and the last two fields, so a name with a comma
/// still parses. Blank lines are skipped; anything else that does not fit is an error naming
/// the line, because a worker that guesses its GPUs would hand jobs to the wrong device.
pub fn parse_query_gpu(text: &str) -> Result<Vec<GpuInfo>, GpuError> {
    let mut gpus: Vec<GpuInfo> = Vec::new();
    for (number, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        let error = |message: &str| GpuError::Parse {
            line: number + 1,
            message: message.to_string(),
            text: line.chars().take(200).collect(),
        };
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if fields.len() < 4 {
            return Err(error("expected `index, name, memory.total, uuid`"));
        }
        let index: u32 = fields[0]
            .parse()
            .map_err(|_| error("index is not a number"))?;
        let uuid = fields[fields.len() - 1];
        let memory = fields[fields.len() - 2];
        let name = fields[1..fields.len() - 2].join(", ");
        if name.is_empty() {
            return Err(error("empty GPU name"));
        }
        if uuid.is_empty() || uuid.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(error("malformed uuid"));
        }
        let memory_total_mib = parse_memory_mib(memory).map_err(|message| error(&message))?;
        if gpus.iter().any(|gpu| gpu.index == index) {
            return Err(error("index listed twice"));
        }
        if gpus.len() == GPUS_MAX {
            return Err(error(&format!("more than {GPUS_MAX} GPUs")));
        }
        gpus.push(GpuInfo {
            index,
            name,
            memory_total_mib,
            uuid: uuid.to_string(),
        });
    }
    Ok(gpus)
}

/// `memory.total` with `nounits` is MiB; `[N/A]` / `[Not Supported]` mean unknown.
fn parse_memory_mib(text: &str) -> Result<Option<u64>, String> {
    if text.starts_with('[') && text.ends_with(']') || text.eq_ignore_ascii_case("N/A") {
        return Ok(None);
    }
    // Without `nounits` nvidia-smi appends " MiB"; accept it rather than fail on a flag typo.
    let number = text.strip_suffix("MiB").unwrap_or(text).trim();
    number
        .parse::<u64>()
        .map(Some)
        .map_err(|_| format!("memory.total {text:?} is not a number of MiB"))
}

/// A short, stable model name for the `gpu` tag: `NVIDIA H100 80GB HBM3` -> `H100`,
/// `NVIDIA A100-SXM4-40GB` -> `A100`, `NVIDIA GeForce RTX 4090` -> `RTX4090`, `Tesla T4` ->
/// `T4`. The name is split at every non-alphanumeric character; vendor and product-line words
/// and memory sizes are dropped; the first token with a digit is the model. Names without one
/// fall back to the remaining words joined by `-` (`NVIDIA TITAN X (Pascal)` ->
/// `TITAN-X-PASCAL`).
///
/// Why not the full name: a job should be able to say `gpu=H100` without knowing whether the
/// box has the SXM or the PCIe board; `gpu_mem_gib` tells those apart where it matters.
pub fn model_tag(name: &str) -> String {
    const VENDOR_WORDS: [&str; 4] = ["NVIDIA", "TESLA", "GEFORCE", "QUADRO"];
    const SERIES_WORDS: [&str; 2] = ["RTX", "GTX"];
    const SUFFIX_WORDS: [&str; 2] = ["TI", "SUPER"];
    let tokens: Vec<String> = name
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|token| !token.is_empty())
        .map(str::to_ascii_uppercase)
        .filter(|token| !VENDOR_WORDS.contains(&token.as_str()))
        .collect();
    let is_memory_size = |token: &str| {
        token
            .strip_suffix("GB")
            .is_some_and(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
    };
    for (position, token) in tokens.iter().enumerate() {
        if is_memory_size(token) || !token.bytes().any(|b| b.is_ascii_digit()) {
            continue;
        }
        let mut model = String::new();
        // `RTX 4090` is one model; `RTX A6000` is the A6000.
        if let Some(previous) = position.checked_sub(1).map(|p| tokens[p].as_str()) {
            if SERIES_WORDS.contains(&previous) && token.bytes().all(|b| b.is_ascii_digit()) {
                model.push_str(previous);
            }
        }
        model.push_str(token);
        if let Some(next) = tokens.get(position + 1) {
            if SUFFIX_WORDS.contains(&next.as_str()) {
                model.push_str(next);
            }
        }
        return model;
    }
    if tokens.is_empty() {
        return "unknown".to_string();
    }
    tokens.join("-").chars().take(64).collect()
}

/// MiB to GiB, rounded to the nearest (81559 MiB, an H100's 80 GB, is 80).
pub fn memory_gib(memory_mib: u64) -> u64 {
    (memory_mib + 512) / 1024
}

/// The selected GPUs, in the order asked for (`All`: nvidia-smi's order).
pub fn select(gpus: &[GpuInfo], selection: &GpuSelection) -> Result<Vec<GpuInfo>, GpuError> {
    if gpus.is_empty() {
        return Err(GpuError::NoGpus);
    }
    match selection {
        GpuSelection::All => Ok(gpus.to_vec()),
        GpuSelection::Indices(indices) => indices
            .iter()
            .map(|index| {
                gpus.iter()
                    .find(|gpu| gpu.index == *index)
                    .cloned()
                    .ok_or_else(|| GpuError::UnknownIndex {
                        index: *index,
                        available: describe(gpus),
                    })
            })
            .collect(),
    }
}

/// Tags a worker driving `selected` advertises: `gpu` (the common model), `gpu_mem_gib` (of the
/// smallest GPU, so a job asking for 80 never lands on a 40) and `gpu_count`. A mix of models
/// is refused: a `gpu` tag that is true of only some slots would send a job to the wrong GPU.
pub fn auto_tags(selected: &[GpuInfo]) -> Result<Tags, GpuError> {
    let models: BTreeSet<String> = selected.iter().map(|gpu| model_tag(&gpu.name)).collect();
    let mut tags = Tags::new();
    match models.len() {
        0 => return Err(GpuError::NoGpus),
        1 => {
            // Checked above: exactly one model.
            if let Some(model) = models.into_iter().next() {
                tags.insert(GPU_TAG.to_string(), model);
            }
        }
        _ => {
            return Err(GpuError::MixedModels {
                models: models.into_iter().collect::<Vec<_>>().join(", "),
            })
        }
    }
    if let Some(smallest_mib) = selected
        .iter()
        .map(|gpu| gpu.memory_total_mib)
        .collect::<Option<Vec<u64>>>()
        .and_then(|memories| memories.into_iter().min())
    {
        tags.insert(
            GPU_MEM_TAG.to_string(),
            memory_gib(smallest_mib).to_string(),
        );
    }
    tags.insert(GPU_COUNT_TAG.to_string(), selected.len().to_string());
    Ok(tags)
}

/// Auto tags overlaid with the user's `--tag`s: the user wins on a conflict, so an operator can
/// always correct or hide what discovery says (e.g. `--tag gpu=H100-SXM`).
pub fn merge_tags(auto: Tags, user: &Tags) -> Tags {
    let mut tags = auto;
    tags.extend(user.iter().map(|(key, value)| (key.clone(), value.clone())));
    tags
}

/// One slot per GPU. `CUDA_VISIBLE_DEVICES` takes the nvidia-smi index, and
/// `CUDA_DEVICE_ORDER=PCI_BUS_ID` makes CUDA number devices the same way (its default order,
/// fastest first, can differ on mixed boxes). Indices rather than UUIDs because some
/// frameworks parse `CUDA_VISIBLE_DEVICES` as integers; the UUID is passed alongside.
pub fn slots(selected: &[GpuInfo]) -> Vec<Slot> {
    selected
        .iter()
        .enumerate()
        .map(|(slot_index, gpu)| Slot {
            index: slot_index,
            env: vec![
                ("CUDA_VISIBLE_DEVICES".to_string(), gpu.index.to_string()),
                ("CUDA_DEVICE_ORDER".to_string(), "PCI_BUS_ID".to_string()),
                ("AGENTD_GPU_INDEX".to_string(), gpu.index.to_string()),
                ("AGENTD_GPU_UUID".to_string(), gpu.uuid.clone()),
                ("AGENTD_GPU_NAME".to_string(), gpu.name.clone()),
            ],
            server: None,
            actor: None,
        })
        .collect()
}

/// `0: NVIDIA H100 80GB HBM3, 1: …` for messages.
pub fn describe(gpus: &[GpuInfo]) -> String {
    if gpus.is_empty() {
        return "no GPUs".to_string();
    }
    gpus.iter()
        .map(|gpu| format!("{}: {}", gpu.index, gpu.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Runs nvidia-smi and parses its answer. `program` is `nvidia-smi` or a path.
pub async fn discover(program: &str) -> Result<Vec<GpuInfo>, GpuError> {
    let mut command = tokio::process::Command::new(program);
    command
        .args(NVIDIA_SMI_ARGS)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = command
        .spawn()
        .map_err(|error| GpuError::NvidiaSmiMissing {
            program: program.to_string(),
            reason: error.to_string(),
        })?;
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let finished = tokio::time::timeout(NVIDIA_SMI_TIMEOUT, async {
        tokio::join!(
            read_capped(stdout.as_mut()),
            read_capped(stderr.as_mut()),
            child.wait()
        )
    })
    .await;
    let Ok((out, err, status)) = finished else {
        return Err(GpuError::NvidiaSmiTimedOut {
            program: program.to_string(),
        });
    };
    let status = status.map_err(|error| GpuError::NvidiaSmiFailed {
        program: program.to_string(),
        status: "could not wait for it".to_string(),
        output: error.to_string(),
    })?;
    if !status.success() {
        // Driver errors ("couldn't communicate with the NVIDIA driver") go to stdout on some
        // versions and to stderr on others: show both.
        let both = format!("{} {}", out.trim(), err.trim());
        let output = match both.trim() {
            "" => "no output".to_string(),
            text => text.chars().take(500).collect(),
        };
        return Err(GpuError::NvidiaSmiFailed {
            program: program.to_string(),
            status: status.to_string(),
            output,
        });
    }
    let gpus = parse_query_gpu(&out)?;
    if gpus.is_empty() {
        return Err(GpuError::NoGpus);
    }
    Ok(gpus)
}

/// Reads at most [`NVIDIA_SMI_OUTPUT_BYTES_MAX`] bytes, as text.
async fn read_capped<R: tokio::io::AsyncRead + Unpin>(reader: Option<&mut R>) -> String {
    use tokio::io::AsyncReadExt;
    let mut bytes = Vec::new();
    if let Some(reader) = reader {
        // A read error leaves what was read; the parse or the exit status says the rest.
        let _partial_is_enough = reader
            .take(NVIDIA_SMI_OUTPUT_BYTES_MAX as u64)
            .read_to_end(&mut bytes)
            .await;
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod tests;
