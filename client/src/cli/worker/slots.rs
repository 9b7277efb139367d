//! The worker's slots: one per `--concurrency`, or `--episodes-per-gpu` per selected GPU with
//! the GPU's environment and tags, each GPU's model server (`--serve`) attached.

use super::WorkerArgs;
use crate::gpu::{self, GpuSelection};
use crate::model_server::{self, ServerConfig};
use crate::worker::{ServerStatus, Slot};
use agentd_schemas::events::Tags;
use anyhow::Context;
use std::time::Duration;
use tokio::sync::watch;

/// The worker's slots (`--concurrency`, or per GPU and `--episodes-per-gpu`), the tags it
/// leases with, and the model servers of its GPUs (`--serve`).
pub(super) async fn slots_and_tags(
    args: &WorkerArgs,
) -> anyhow::Result<(Vec<Slot>, Tags, Vec<SupervisedServer>)> {
    let user_tags: Tags = args.tags.iter().cloned().collect();
    let (slots, tags) = match &args.gpus {
        None => {
            let slots = (0..args.concurrency)
                .map(|index| Slot {
                    index,
                    env: Vec::new(),
                    server: None,
                    actor: None,
                })
                .collect();
            (slots, user_tags)
        }
        Some(selection) => gpu_slots(&args.nvidia_smi, selection, &user_tags).await?,
    };
    let (slots, servers) = match &args.serve {
        None => (slots, Vec::new()),
        Some(template) => with_servers(slots, template, args)?,
    };
    Ok((
        with_episodes_per_gpu(slots, args.episodes_per_gpu),
        tags,
        servers,
    ))
}

/// One slot per selected GPU and the tags they imply, overlaid with the user's.
pub(super) async fn gpu_slots(
    nvidia_smi: &str,
    selection: &GpuSelection,
    user_tags: &Tags,
) -> anyhow::Result<(Vec<Slot>, Tags)> {
    let found = gpu::discover(nvidia_smi).await?;
    let selected = gpu::select(&found, selection)?;
    // A mix of models has no true `gpu` tag, unless the operator says which one to advertise.
    let auto = match gpu::auto_tags(&selected) {
        Ok(tags) => tags,
        Err(gpu::GpuError::MixedModels { .. }) if user_tags.contains_key(gpu::GPU_TAG) => {
            let mut tags = Tags::new();
            tags.insert(gpu::GPU_COUNT_TAG.to_string(), selected.len().to_string());
            tags
        }
        Err(error) => return Err(error.into()),
    };
    for gpu in &selected {
        let memory = gpu
            .memory_total_mib
            .map_or_else(|| "memory unknown".to_string(), |mib| format!("{mib} MiB"));
        eprintln!(
            "agentctl worker: GPU {} {} ({memory}, {}) -> one slot",
            gpu.index, gpu.name, gpu.uuid
        );
    }
    Ok((gpu::slots(&selected), gpu::merge_tags(auto, user_tags)))
}

/// Most jobs at once on one GPU (a limit on slots; vLLM batches a few hundred requests).
pub(super) const EPISODES_PER_GPU_MAX: usize = 1024;

/// A server to supervise, and where its supervisor publishes its status.
pub(super) type SupervisedServer = (ServerConfig, watch::Sender<ServerStatus>);

/// Gives each GPU slot a model server: its port, its `AGENTD_MODEL_URL`, and the status channel
/// the worker loop reads. Returns the slots and what the supervisors need.
fn with_servers(
    slots: Vec<Slot>,
    template: &str,
    args: &WorkerArgs,
) -> anyhow::Result<(Vec<Slot>, Vec<SupervisedServer>)> {
    let mut servers = Vec::new();
    let mut served = Vec::new();
    for mut slot in slots {
        let port = u16::try_from(slot.index)
            .ok()
            .and_then(|offset| args.serve_port_base.checked_add(offset))
            .with_context(|| {
                format!(
                    "--serve-port-base {} leaves no port for GPU slot {}",
                    args.serve_port_base, slot.index
                )
            })?;
        let gpu_index: u32 = slot
            .env
            .iter()
            .find(|(key, _)| key == "AGENTD_GPU_INDEX")
            .and_then(|(_, value)| value.parse().ok())
            .context("--serve needs --gpus")?;
        let config = ServerConfig {
            gpu_index,
            port,
            command_line: model_server::expand_template(template, gpu_index, port),
            env: slot.env.clone(),
            health_path: args.serve_health.clone(),
            ready_timeout: Duration::from_millis(args.serve_ready_timeout),
            check_interval: Duration::from_millis(args.serve_check_interval),
            log_path: args.serve_log_dir.join(format!("gpu{gpu_index}.log")),
            log_bytes_max: args.serve_log_mib.max(1) * 1024 * 1024,
        };
        eprintln!(
            "agentctl worker: GPU {gpu_index}: model server on port {port}, log {}",
            config.log_path.display()
        );
        slot.env
            .push(("AGENTD_MODEL_URL".to_string(), config.url()));
        let (status, receiver) = watch::channel(ServerStatus::default());
        slot.server = Some(receiver);
        servers.push((config, status));
        served.push(slot);
    }
    Ok((served, servers))
}

/// `episodes` slots per GPU slot, each with the GPU's environment and server; slot numbers
/// (`AGENTD_SLOT`) run 0..gpus*episodes, GPU by GPU.
pub(super) fn with_episodes_per_gpu(slots: Vec<Slot>, episodes: usize) -> Vec<Slot> {
    if episodes <= 1 {
        return slots;
    }
    let mut expanded = Vec::with_capacity(slots.len() * episodes);
    for slot in slots {
        for _ in 0..episodes {
            expanded.push(Slot {
                index: expanded.len(),
                env: slot.env.clone(),
                server: slot.server.clone(),
                actor: slot.actor.clone(),
            });
        }
    }
    expanded
}
