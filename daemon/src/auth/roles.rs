//! Roles and what each may do.

use serde::Deserialize;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything.
    Admin,
    /// Submit jobs and read the jobs it submitted.
    Submit,
    /// Lease, heartbeat, complete, fail; post steps, state, sandbox results and rewards.
    Worker,
    /// Read-only: jobs, events, queues, stats, exports.
    Read,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Submit => "submit",
            Role::Worker => "worker",
            Role::Read => "read",
        }
    }

    /// Whether this role may perform actions needing `permission`.
    pub fn allows(self, permission: Permission) -> bool {
        match (self, permission) {
            (Role::Admin, _) => true,
            (Role::Submit, Permission::Submit) => true,
            (Role::Worker, Permission::Work) => true,
            (Role::Read, Permission::Read) => true,
            (Role::Read | Role::Worker, Permission::ReadTasks) => true,
            // A submitter may read jobs; the handler then checks the job is its own.
            (Role::Read | Role::Submit, Permission::ReadOwnJobs) => true,
            _ => false,
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "admin" => Ok(Role::Admin),
            "submit" => Ok(Role::Submit),
            "worker" => Ok(Role::Worker),
            "read" => Ok(Role::Read),
            other => Err(format!(
                "unknown role {other:?}; expected admin, submit, worker or read"
            )),
        }
    }
}

/// The kinds of action routes need.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    /// Read jobs, events, queues, stats, trajectories, exports, metrics (not digests: those
    /// are under `/v1/admin/`, which needs `Admin`).
    Read,
    /// Submit jobs (and read the ones submitted, checked per job).
    Submit,
    /// Worker actions: leases and everything an actor posts.
    Work,
    /// Read one job: readers any, submitters only the jobs they submitted.
    ReadOwnJobs,
    /// Read per-task state and trajectories (actors read the state they build prompts from).
    ReadTasks,
    /// Operator actions: cancel, retry, pause, resume, datasets, exports, and every route under
    /// `/v1/admin/` (projection digests), reads included.
    Admin,
}

impl Permission {
    pub fn describe(self) -> &'static str {
        match self {
            Permission::Read => "read",
            Permission::Submit => "submit jobs",
            Permission::Work => "perform worker actions",
            Permission::ReadTasks => "read task state",
            Permission::ReadOwnJobs => "read jobs",
            Permission::Admin => "perform admin actions",
        }
    }
}
