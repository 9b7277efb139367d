//! `agentctl tokens create --role ROLE --name NAME`: makes a new bearer token, prints it once,
//! and prints the config line that registers its hash with the daemon.

use super::output::print_json;
use anyhow::bail;
use clap::Subcommand;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// Prefix of every agentd token (the daemon does not require it; it makes leaks recognisable).
pub const TOKEN_PREFIX: &str = "agtk_";

#[derive(Subcommand, Debug)]
pub enum TokensCommand {
    /// Create a token; it is printed once and never stored, only its sha256 goes in the config
    Create {
        /// admin (everything), submit (submit and read own jobs), worker (leases, steps, state,
        /// sandbox results, rewards), read (read-only)
        #[arg(long)]
        role: String,
        /// Name recorded in every event this token causes (audit trail), e.g. box-3
        #[arg(long)]
        name: String,
    },
}

pub fn run(command: TokensCommand, json: bool) -> anyhow::Result<()> {
    let TokensCommand::Create { role, name } = command;
    if !["admin", "submit", "worker", "read"].contains(&role.as_str()) {
        bail!("unknown role {role:?}; expected admin, submit, worker or read");
    }
    if name.is_empty()
        || name.len() > 128
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        bail!("--name must be 1-128 letters, digits, '-', '_' or '.'");
    }
    let mut secret = [0u8; 32];
    // ThreadRng is a CSPRNG seeded from the operating system.
    rand::rng().fill_bytes(&mut secret);
    let token = format!("{TOKEN_PREFIX}{}", hex::encode(secret));
    let sha256 = hex::encode(Sha256::digest(token.as_bytes()));
    let line = format!("{{ name = \"{name}\", role = \"{role}\", sha256 = \"{sha256}\" }},");
    if json {
        return print_json(
            &serde_json::json!({ "name": name, "role": role, "token": token, "sha256": sha256, "config_line": line }),
        );
    }
    println!("token (shown once; give it to the client, e.g. AGENTD_TOKEN=...):");
    println!("  {token}");
    println!();
    println!("add this line to the `tokens = [ ... ]` list in the [auth] section of agentd.toml, then restart agentd:");
    println!("  {line}");
    Ok(())
}
